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
echo "  my network interfaces: $(ls /sys/class/net | tr '\n' ' ')(a network namespace of its own)"
echo "  my address: $(ip -o -4 addr show eth0 | awk '{print $4}'), default route via $(ip route | awk '/^default/ {print $3}')  (eth0: a veth pair to the host's bridge)"
echo
echo "The numbered plan above is every kernel step that made this container."
