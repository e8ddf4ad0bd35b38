#!/usr/bin/env bash
# run_as_owner.sh REFERENCE TARGET COMMAND [ARG...]
#
# Runs COMMAND (as the container's root), then hands TARGET and everything under it to the owner and group of
# REFERENCE, whether COMMAND succeeded or not, and exits with COMMAND's status. docker-compose.yml mounts the
# checkout read-only as REFERENCE and ./output as TARGET, so what the build and tensorrt steps write on the
# host belongs to whoever owns the checkout, the user who ran `docker compose`, not to root.
set -uo pipefail

if (($# < 3)); then
    echo "usage: run_as_owner.sh REFERENCE TARGET COMMAND [ARG...]" >&2
    exit 2
fi
reference=$1
target=$2
shift 2
if [[ ! -e $reference ]]; then
    echo "run_as_owner: $reference does not exist: mount the checkout there (docker-compose.yml does)" >&2
    exit 2
fi

"$@"
status=$?
if [[ -e $target ]] && ! chown -R --reference="$reference" "$target"; then
    echo "run_as_owner: could not give $target the owner of $reference" >&2
    ((status == 0)) && status=1
fi
exit "$status"
