"""digitlab: handwritten-digit recognition from drawings, served over HTTP and Streamlit."""

import os as _os

__version__ = "0.1.0"

#: set by `digitlab serve` for its uvicorn workers (the value: its own pid). A Ctrl-C reaches the whole process
#: group, and a worker still importing printed a KeyboardInterrupt traceback: a worker starts with SIGINT blocked
#: (`api.server.workers_start_deaf`) and ignores it until uvicorn puts in its own handler when it starts serving;
#: until then the parent stops it with SIGTERM.
WORKER_OF_ENV = "DIGITLAB_WORKER_OF"

if _os.environ.get(WORKER_OF_ENV) == str(_os.getppid()):  # (here: the first module of ours a worker imports)
    import signal as _signal

    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _signal.pthread_sigmask(_signal.SIG_UNBLOCK, {_signal.SIGINT})  # a Ctrl-C already pending is dropped
