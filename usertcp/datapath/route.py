"""Where a flow's frames go: output interface, source address, and both MAC addresses.

Asked of the kernel through pyroute2 in the calling thread's network namespace: the route to
the peer, then the neighbour entry of the next hop. If the kernel has not resolved the next hop
yet, one UDP datagram to the discard port makes it run ARP (the lab peer answers with ICMP port
unreachable, which is harmless); we then poll the neighbour table briefly.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

NUD_VALID = 0x02 | 0x04 | 0x08 | 0x10 | 0x40 | 0x80  # REACHABLE STALE DELAY PROBE NOARP PERMANENT


class RouteError(RuntimeError):
    pass


@dataclass(frozen=True)
class Path:
    ifname: str
    ifindex: int
    src_ip: str
    src_mac: str
    next_hop: str
    dst_mac: str


def resolve(dst_ip: str, timeout: float = 1.0) -> Path:
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        try:
            routes = ipr.route("get", dst=dst_ip)
        except Exception as exc:  # noqa: BLE001 - netlink says ENETUNREACH as an exception
            raise RouteError(f"no route to {dst_ip} in this network namespace ({exc})") from exc
        r = routes[0]
        oif = r.get_attr("RTA_OIF")
        src = r.get_attr("RTA_PREFSRC")
        via = r.get_attr("RTA_GATEWAY") or dst_ip
        link = ipr.get_links(oif)[0]
        ifname = link.get_attr("IFLA_IFNAME")
        src_mac = link.get_attr("IFLA_ADDRESS")
        if ifname == "lo":
            raise RouteError(f"{dst_ip} is local to this namespace; usertcp needs a peer across a link")
        deadline = time.monotonic() + timeout
        poked = False
        while True:
            for n in ipr.get_neighbours(ifindex=oif, dst=via):
                if n["state"] & NUD_VALID and n.get_attr("NDA_LLADDR"):
                    return Path(ifname, oif, src, src_mac, via, n.get_attr("NDA_LLADDR"))
            if time.monotonic() > deadline:
                raise RouteError(f"no ARP reply from next hop {via} on {ifname}: is the peer's side up?")
            if not poked:
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                    try:
                        s.sendto(b"", (dst_ip, 9))
                    except OSError:
                        pass
                poked = True
            time.sleep(0.01)
