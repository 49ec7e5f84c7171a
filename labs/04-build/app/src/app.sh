# lab04-app: renders its home page from its configuration, then serves it.
#
#   sh app.sh [--port PORT] [--once]
#
# It runs in its working directory: reads ./config/app.conf, writes
# ./www/index.html, then serves ./www with busybox's httpd on PORT (8080).
# --once renders the page, says so, and exits instead of serving.
port=8080
once=
while [ $# -gt 0 ]; do
    case "$1" in
        --port) port=$2; shift ;;
        --once) once=1 ;;
        *) echo "app.sh: unknown argument: $1" >&2; exit 2 ;;
    esac
    shift
done
if [ ! -f ./config/app.conf ]; then
    echo "app.sh: no ./config/app.conf in $(pwd)" >&2
    exit 1
fi
. ./config/app.conf
mkdir -p www 2>/dev/null
if ! echo "<link rel=stylesheet href=style.css><h1>$title</h1><p>$greeting</p>" 2>/dev/null > www/index.html; then
    echo "app.sh: cannot write $(pwd)/www/index.html as user $(id -un) (uid $(id -u)): Permission denied" >&2
    exit 1
fi
echo "lab04-app: $(pwd)/www/index.html written as user $(id -un); serving on port $port"
[ -z "$once" ] || exit 0
exec httpd -f -p "$port" -h www
