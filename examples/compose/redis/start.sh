#!/bin/sh
# start.sh NODE.conf: starts one Redis data node (redis-N.conf) or sentinel
# (sentinel-N.conf) of the compose example from the template of that name
# next to this script.
#
# Redis and Sentinel rewrite their config file (Sentinel its state, Redis
# CONFIG REWRITE when Sentinel re-points it), and need it writable in a
# writable directory. So the template is copied to $DATA_DIR (the redis
# image's /data volume) on the container's first start only: a restarted
# container keeps what the failovers wrote, e.g. a demoted master comes back
# as a replica of the new one.
#
# The password is appended to the copy from REDIS_PASSWORD, so that it is in
# no file of the repository and in no process's command line.
set -eu

name=${1:?usage: start.sh NODE.conf}
templates=$(dirname "$0")
data=${DATA_DIR:-/data}
conf=$data/$name
: "${REDIS_PASSWORD:?REDIS_PASSWORD is not set (copy .env.example to .env)}"

# Sentinel 7.0 writes auth-pass back unquoted when it rewrites its config, so
# a password with a space or a quote would stop it from starting again.
case $REDIS_PASSWORD in
*[[:space:]\"\']*)
	echo "start.sh: REDIS_PASSWORD must not contain spaces or quotes" >&2
	exit 1
	;;
esac
# One argument for Redis's config parser: double quotes, \ escaped.
quoted=$(printf '%s' "$REDIS_PASSWORD" | sed 's/[\\"]/\\&/g')

if [ ! -f "$conf" ]; then
	umask 077 # the copy holds the password
	cp "$templates/$name" "$conf.new"
	case $name in
	sentinel-*)
		master=$(awk '$1 == "sentinel" && $2 == "monitor" { print $3; exit }' "$conf.new")
		printf '\nsentinel auth-pass %s "%s"\n' "$master" "$quoted" >>"$conf.new"
		;;
	*)
		printf '\nrequirepass "%s"\nmasterauth "%s"\n' "$quoted" "$quoted" >>"$conf.new"
		;;
	esac
	mv "$conf.new" "$conf"
fi

# The image's entrypoint gives /data to the redis user and drops root for
# "redis-server ..." (not for "redis-sentinel", hence --sentinel).
case $name in
sentinel-*) exec docker-entrypoint.sh redis-server "$conf" --sentinel ;;
*) exec docker-entrypoint.sh redis-server "$conf" ;;
esac
