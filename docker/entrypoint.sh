#!/bin/sh
# What the digitlab containers run (tests/test_deploy.py runs this same script as local processes).
#   entrypoint.sh api   apply the database migrations, then serve the API (uvicorn)
#   entrypoint.sh ui    serve the Streamlit UI (DIGITLAB_API_URL says where the API is)
#   entrypoint.sh trainer  every DIGITLAB_LEARN_EVERY seconds, `digitlab learn --min-new DIGITLAB_LEARN_MIN_NEW`
#   entrypoint.sh CMD   run anything else, e.g. `docker compose run --rm api digitlab evaluate`
# Settings come from the environment (docs/deploy.md). `exec` hands PID 1 to the server, so SIGTERM
# from `docker stop` reaches it directly.
set -eu

case "${1:-api}" in
  api)
    # Several replicas may start together: the store serialises migrations with a PostgreSQL advisory
    # lock. The database is healthy before the API starts (compose depends_on), but a restarting
    # database gets a few more tries before the container gives up (and its restart policy retries).
    tries=0
    until digitlab db upgrade; do
      tries=$((tries + 1))
      if [ "$tries" -ge 15 ]; then
        echo "entrypoint: database migrations failed $tries times; giving up" >&2
        exit 1
      fi
      sleep 2
    done
    exec digitlab serve
    ;;
  ui)
    exec digitlab ui
    ;;
  trainer)
    every="${DIGITLAB_LEARN_EVERY:-3600}"
    min_new="${DIGITLAB_LEARN_MIN_NEW:-200}"
    # a value `sleep` refuses made the loop start a run every ~2 s
    case "$every" in  # (all zeros, "00" too: `sleep 00` returns at once)
      "" | *[!0-9]*) echo "entrypoint: DIGITLAB_LEARN_EVERY must be a whole number of seconds (> 0), got '$every'" >&2; exit 2 ;;
      *[!0]*) ;;  # a digit other than 0: more than 0
      *) echo "entrypoint: DIGITLAB_LEARN_EVERY must be a whole number of seconds (> 0), got '$every'" >&2; exit 2 ;;
    esac
    case "$min_new" in
      "" | *[!0-9]*) echo "entrypoint: DIGITLAB_LEARN_MIN_NEW must be a whole number, got '$min_new'" >&2; exit 2 ;;
    esac
    # The shell is PID 1's child here: SIGTERM (`docker stop`) is passed on to the running learn, which
    # marks its job failed and leaves the served models as they were, and the loop ends (the shell used
    # to die at once, leaving the run to be killed without a word).
    child=""
    trap 'if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; wait "$child"; fi; exit 143' TERM INT
    while true; do
      digitlab learn --min-new "$min_new" &
      child=$!
      wait "$child" || true
      sleep "$every" &
      child=$!
      wait "$child" || true
    done
    ;;
  *)
    exec "$@"
    ;;
esac
