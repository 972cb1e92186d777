#!/bin/sh
# What the digitlab containers run (tests/test_deploy.py runs this same script as local processes).
#   entrypoint.sh api   apply the database migrations, then serve the API (uvicorn)
#   entrypoint.sh ui    serve the Streamlit UI (DIGITLAB_API_URL says where the API is)
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
  *)
    exec "$@"
    ;;
esac
