# Run by `make demo` inside a busybox container (dockyard run ... sh -c "$(cat demo/greeting.sh)").
# Everything printed here is seen from *inside* the container.
echo
echo "Hello from inside a Dockyard container!"
echo "  hostname:  $(hostname)  (the host is called $HOST_NAME: a UTS namespace of its own)"
echo "  my PID:    $$  (PID 1 of a new PID namespace)"
echo "  the processes I can see:"
ps -o pid,comm | sed 's/^/    /'
echo "  my root filesystem (the busybox image on overlayfs): $(ls / | tr '\n' ' ')"
echo "  my mounts:"
cut -d' ' -f1-3 /proc/mounts | sed 's/^/    /'
echo "  my network interfaces: $(ls /sys/class/net) (a network namespace of its own)"
echo
echo "The numbered plan above is every kernel step that made this container."
