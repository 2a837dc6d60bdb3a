"""netns: metadb daemons as "nodes" in their own network namespaces, which a test
can cut off the network, reconnect, and slow down (tests/faults/cluster.py).

The addresses are the test's own and nothing else is ever contacted: a lab picks a
free 10.231.B.0/24 (B from 100..199, none of whose addresses or routes exist yet) and

  - a SERVICE address 10.231.B.253/32 on a host-internal veth pair (mcB s0/s1, both
    ends in the host: a stand-in for a dummy interface, which this kernel lacks).
    The services the nodes use listen there: the Kafka brokers (deploy/stack.sh
    METADB_KAFKA_EXTRA_HOST adds a NODES listener on it, advertised with that
    address, so a client in a namespace reaches every broker);
  - per node k (0..29) a namespace mdbc-B-k with two links to the host, each a
    veth pair with a /30:
      net: 10.231.B.(8k+1) host side, 10.231.B.(8k+2) inside; the namespace's
           only route beyond its links is 10.231.B.253/32 via the host side;
      db:  10.231.B.(8k+5) host side, 10.231.B.(8k+6) inside; a TCP forwarder of
           this module listens on 10.231.B.(8k+5) and relays to the database
           gateway, which listens on 127.0.0.1 only (in another namespace a
           127.0.0.1 is that namespace's own loopback).
    No default route: from inside, only the service address and the node's own
    forwarder exist.

Faults (all real, on the links; the daemons are not told):
  node.cut()            both links down on the host side: packets from the node
                        go nowhere (the inside end stays up without carrier, like
                        a pulled cable), the host's routes to the node disappear;
  node.cut("db")        only the database link;
  node.restore()        links up again (the kernel restores the /30 routes);
  node.slow_db(500)     500 ms added to every packet the node sends on its
                        database link: `tc qdisc add dev <db link> root netem
                        delay 500ms` inside the namespace; where the kernel has no
                        sch_netem (the test machine's 6.18 build has neither netem
                        nor prio/gact), the node's own forwarder holds every
                        client->server chunk for 500 ms instead (same effect on
                        that link: each request reaches the database 500 ms late,
                        order kept). node.slow_mode says which one ran.

Mid-write detection: a forwarder counts, per connection, the bytes the client sent
since the server last answered; when that crosses `trigger_bytes` (a bulk write,
not a ping or a job update) it calls `on_request(node, conn, nbytes)` from its
thread, so a test can cut the node while the write is in flight, and it records
when the server's answer arrived (node.fwd.answers) to prove the answer existed
and could not reach the node.

Everything a lab creates is removed by lab.destroy(), at exit, and on
SIGTERM/SIGINT/SIGHUP. `python3 tests/faults/netns.py cleanup` removes leftovers
of killed runs (namespaces mdbc-*, links mc<B>*) and `... selftest` checks the
machine can do all this."""

import atexit
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

SVC_HOST = 253


def sh(*args, check=True, timeout=20, ns=None):
    cmd = (["ip", "netns", "exec", ns] if ns else []) + list(args)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError("%s: rc %d: %s" % (" ".join(cmd), p.returncode, (p.stderr or p.stdout).strip()))
    return p


def _taken_octets():
    out = sh("ip", "-o", "addr", "show", check=False).stdout + sh("ip", "route", "show", "table", "all",
                                                                  check=False).stdout
    ns = sh("ip", "netns", "list", check=False).stdout
    taken = set()
    for b in range(100, 200):
        if ("10.231.%d." % b) in out or ("mdbc-%d-" % b) in ns:
            taken.add(b)
    return taken


class Forwarder:
    """TCP relay listen (addr, port) -> target (host, port), one thread pair per
    connection; optional client->server delay; bulk-request trigger."""

    def __init__(self, listen_addr, target, name="fwd", trigger_bytes=0, on_request=None):
        self.name = name
        self.target = target
        self.delay_s = 0.0
        self.trigger_bytes = trigger_bytes
        self.on_request = on_request
        self.answers = []  # (conn id, t_trigger, t_answer) for triggered requests
        self.conns = 0
        self.bytes_c2s = 0
        self.bytes_s2c = 0
        self._lock = threading.Lock()
        self._closing = False
        self._socks = set()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((listen_addr, 0))
        self.sock.listen(64)
        self.addr = self.sock.getsockname()
        self.thread = threading.Thread(target=self._accept, name=name, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self._closing:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(self.target, timeout=10)
                s.settimeout(None)
            except OSError:
                c.close()
                continue
            for x in (c, s):
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.conns += 1
                cid = self.conns
                self._socks.update((c, s))
            st = {"pending": 0, "trigger_at": None}
            threading.Thread(target=self._c2s, args=(cid, c, s, st), daemon=True).start()
            threading.Thread(target=self._s2c, args=(cid, s, c, st), daemon=True).start()

    def _c2s(self, cid, c, s, st):
        q = []
        cv = threading.Condition()
        done = [False]

        def sender():
            while True:
                with cv:
                    while not q and not done[0]:
                        cv.wait()
                    if not q:
                        break
                    due, data = q[0]
                now = time.time()
                if due > now:
                    time.sleep(due - now)
                    continue
                with cv:
                    q.pop(0)
                try:
                    if data is None:
                        s.shutdown(socket.SHUT_WR)
                    else:
                        s.sendall(data)
                except OSError:
                    break
            _close(c, s)
        t = threading.Thread(target=sender, daemon=True)
        t.start()
        while True:
            try:
                data = c.recv(65536)
            except OSError:
                data = b""
            with cv:
                q.append((time.time() + self.delay_s, data or None))
                cv.notify()
            if not data:
                break
            with self._lock:
                self.bytes_c2s += len(data)
            st["pending"] += len(data)
            if (self.trigger_bytes and self.on_request and st["trigger_at"] is None and
                    st["pending"] >= self.trigger_bytes):
                st["trigger_at"] = time.time()
                cb, self.on_request = self.on_request, None  # one shot
                try:
                    cb(cid, st["pending"])
                except Exception as e:  # noqa: BLE001
                    print("# forwarder %s: trigger callback failed: %s" % (self.name, e), flush=True)
        with cv:
            done[0] = True
            cv.notify()

    def _s2c(self, cid, s, c, st):
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if not data:
                try:
                    c.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                break
            if st["trigger_at"] is not None and st["pending"]:
                self.answers.append((cid, st["trigger_at"], time.time()))
            st["pending"] = 0
            with self._lock:
                self.bytes_s2c += len(data)
            try:
                c.sendall(data)
            except OSError:
                break
        _close(c, s)

    def close(self):
        self._closing = True
        try:
            self.sock.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for x in socks:
            _close(x)


def _close(*socks):
    for x in socks:
        try:
            x.close()
        except OSError:
            pass


class Node:
    def __init__(self, lab, k, name):
        self.lab, self.k, self.name = lab, k, name
        b = lab.b
        self.ns = "mdbc-%d-%d" % (b, k)
        self.net_host_if, self.net_ns_if = "mc%dn%dh" % (b, k), "mc%dn%di" % (b, k)
        self.db_host_if, self.db_ns_if = "mc%dd%dh" % (b, k), "mc%dd%di" % (b, k)
        self.net_host_addr, self.addr = "10.231.%d.%d" % (b, 8 * k + 1), "10.231.%d.%d" % (b, 8 * k + 2)
        self.db_host_addr, self.db_addr = "10.231.%d.%d" % (b, 8 * k + 5), "10.231.%d.%d" % (b, 8 * k + 6)
        self.fwd = None
        self.slow_mode = None
        self.cut_links = set()
        sh("ip", "netns", "add", self.ns)
        lab.namespaces.append(self.ns)
        sh("ip", "-n", self.ns, "link", "set", "lo", "up")
        for hif, nif, haddr, naddr in ((self.net_host_if, self.net_ns_if, self.net_host_addr, self.addr),
                                       (self.db_host_if, self.db_ns_if, self.db_host_addr, self.db_addr)):
            sh("ip", "link", "add", hif, "type", "veth", "peer", "name", nif, "netns", self.ns)
            lab.links.append(hif)
            sh("ip", "addr", "add", haddr + "/30", "dev", hif)
            sh("ip", "link", "set", hif, "up")
            sh("ip", "-n", self.ns, "addr", "add", naddr + "/30", "dev", nif)
            sh("ip", "-n", self.ns, "link", "set", nif, "up")
        sh("ip", "-n", self.ns, "route", "add", lab.svc + "/32", "via", self.net_host_addr)
        ok = wait(lambda: _can_connect_probe(self), 10)
        if not ok:
            raise RuntimeError("node %s: links did not come up" % self.name)

    def wrapper(self):
        """Prefix that runs a command inside the node (ip netns exec execs it: same pid)."""
        return ["ip", "netns", "exec", self.ns]

    def db_forward(self, target_port, trigger_bytes=0, on_request=None):
        """Start this node's database forwarder: (host-side db address, port)."""
        if not self.fwd:
            self.fwd = Forwarder(self.db_host_addr, ("127.0.0.1", target_port), "fwd-" + self.name,
                                 trigger_bytes, on_request)
            self.lab.forwarders.append(self.fwd)
        return self.fwd.addr

    def cut(self, *links):
        """Take links (default: both) down on the host side."""
        links = links or ("net", "db")
        for l_ in links:
            sh("ip", "link", "set", self.net_host_if if l_ == "net" else self.db_host_if, "down")
            self.cut_links.add(l_)

    def restore(self):
        for l_ in sorted(self.cut_links):
            sh("ip", "link", "set", self.net_host_if if l_ == "net" else self.db_host_if, "up")
        self.cut_links.clear()
        # the kernel re-adds the /30 routes on link up; the namespace's service route
        # was never removed (its end stayed up)
        wait(lambda: _can_connect_probe(self), 10)

    def slow_db(self, ms):
        """Add ms to every packet the node sends on its database link."""
        p = sh("tc", "qdisc", "replace", "dev", self.db_ns_if, "root", "netem", "delay", "%dms" % ms, ns=self.ns,
               check=False)
        if p.returncode == 0:
            self.slow_mode = "netem"
        else:
            if not self.fwd:
                raise RuntimeError("slow_db without netem needs the node's forwarder first")
            self.fwd.delay_s = ms / 1000.0
            self.slow_mode = "forwarder (no sch_netem: %s)" % p.stderr.strip().splitlines()[-1][:60]
        return self.slow_mode

    def unslow_db(self):
        if self.slow_mode == "netem":
            sh("tc", "qdisc", "del", "dev", self.db_ns_if, "root", ns=self.ns, check=False)
        elif self.fwd:
            self.fwd.delay_s = 0.0
        self.slow_mode = None


def _can_connect_probe(node):
    """The node's net link carries traffic: a ping-like TCP probe from inside to the
    service address's closed port (RST = reachable)."""
    code = ("import socket,sys\ns=socket.socket();s.settimeout(1)\n"
            "try:\n s.connect((sys.argv[1],9))\nexcept ConnectionRefusedError:\n sys.exit(0)\n"
            "except OSError:\n sys.exit(1)\nsys.exit(0)\n")
    try:
        return sh(sys.executable, "-c", code, node.lab.svc, ns=node.ns, check=False, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def wait(fn, timeout, interval=0.2):
    end = time.time() + timeout
    while True:
        v = fn()
        if v or time.time() >= end:
            return v
        time.sleep(interval)


_LABS = []


class Lab:
    def __init__(self):
        taken = _taken_octets()
        free = [b for b in range(100, 200) if b not in taken]
        if not free:
            raise RuntimeError("no free 10.231.B.0/24 for the test (run netns.py cleanup?)")
        self.b = free[os.getpid() % len(free)]
        self.svc = "10.231.%d.%d" % (self.b, SVC_HOST)
        self.namespaces, self.links, self.forwarders, self.nodes = [], [], [], []
        _LABS.append(self)
        s0, s1 = "mc%ds0" % self.b, "mc%ds1" % self.b
        sh("ip", "link", "add", s0, "type", "veth", "peer", "name", s1)
        self.links.append(s0)
        sh("ip", "addr", "add", self.svc + "/32", "dev", s0)
        sh("ip", "link", "set", s0, "up")
        sh("ip", "link", "set", s1, "up")

    def node(self, name):
        n = Node(self, len(self.nodes), name)
        self.nodes.append(n)
        return n

    def destroy(self):
        for f in self.forwarders:
            f.close()
        for ns in self.namespaces:
            sh("ip", "netns", "del", ns, check=False)
        for l_ in self.links:
            sh("ip", "link", "del", l_, check=False)
        self.namespaces, self.links, self.forwarders = [], [], []
        if self in _LABS:
            _LABS.remove(self)


def cleanup_all():
    for lab in list(_LABS):
        try:
            lab.destroy()
        except Exception as e:  # noqa: BLE001
            print("warning: netns cleanup: %s" % e, flush=True)


atexit.register(cleanup_all)


def install_signal_cleanup():
    """Chain our cleanup before the handlers already installed (reltest's kill the
    daemons and the isolated stack, then _exit)."""
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        prev = signal.getsignal(s)

        def h(sig, frame, prev=prev):
            cleanup_all()
            if callable(prev):
                prev(sig, frame)
            else:
                os._exit(128 + sig)
        signal.signal(s, h)


def cleanup_leftovers():
    """Remove namespaces mdbc-* and links mc<B>* of earlier, killed runs."""
    for line in sh("ip", "netns", "list", check=False).stdout.splitlines():
        n = line.split()[0] if line.split() else ""
        if n.startswith("mdbc-"):
            print("removing namespace", n)
            sh("ip", "netns", "del", n, check=False)
    for line in sh("ip", "-o", "link", "show", check=False).stdout.splitlines():
        parts = line.split(":")
        if len(parts) > 1:
            n = parts[1].strip().split("@")[0]
            if n.startswith("mc") and n[2:5].isdigit() and ("s0" in n[5:] or n.endswith("h")):
                print("removing link", n)
                sh("ip", "link", "del", n, check=False)


def selftest():
    """Two nodes; the service address and a forwarder are reachable; a cut blocks;
    a restore heals; a slow link is slow."""
    lab = Lab()
    try:
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]

        def echo():
            while True:
                try:
                    c, _ = srv.accept()
                except OSError:
                    return
                threading.Thread(target=lambda c=c: [c.sendall(d) for d in iter(lambda: c.recv(4096), b"")],
                                 daemon=True).start()
        threading.Thread(target=echo, daemon=True).start()
        n = lab.node("a")
        addr, fport = n.db_forward(port)
        code = ("import socket,sys,time\nt=time.time()\ns=socket.create_connection((sys.argv[1],int(sys.argv[2])),"
                "timeout=3)\ns.sendall(b'ping')\nprint(s.recv(10).decode(), round(time.time()-t,3))\n")

        def rt():
            p = sh(sys.executable, "-c", code, addr, str(fport), ns=n.ns, check=False, timeout=10)
            return p.stdout.strip() or p.stderr.strip().splitlines()[-1]
        print("echo via the node's forwarder:", rt())
        n.cut()
        print("with the node cut:", rt())
        n.restore()
        print("restored:", rt())
        print("slow_db(500):", n.slow_db(500), "->", rt())
        n.unslow_db()
        srv.close()
    finally:
        lab.destroy()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "cleanup":
        cleanup_leftovers()
    elif len(sys.argv) > 1 and sys.argv[1] == "selftest":
        selftest()
    else:
        print(__doc__)
