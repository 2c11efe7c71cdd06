// lab_loss: random packet loss for one direction of the lab's path (compiled by bcc at run time,
// loaded and configured by netns/loss.py).
//
// Attached with XDP to the interface that *receives* the direction to be lossy: forward loss on
// the receiver's interface (data coming from the router), reverse loss on the router's interface
// toward the receiver (ACKs coming from the receiver). Why XDP there:
//   - it runs after the bottleneck, per MTU-sized packet: while an XDP program without frags
//     support is on a veth, the kernel turns off TSO on its peer (drivers/net/veth.c,
//     veth_xdp_set), so the sending side segments GSO bundles before they cross, and each verdict
//     is about one packet, as on a real lossy link. A drop in iptables/NFQUEUE would throw away
//     a whole 64 KB bundle.
//   - a veth with an XDP program receives packet by packet (and GROs them afterwards, like a
//     NIC), so the receiver still sees ordinary MTU-sized arrivals.
//   - it is cheap (one random number and two map lookups, before the stack sees the packet),
//     and the per-CPU counters below are exact: every packet is counted with its verdict, so
//     `dropped` is exactly the number of packets this program removed (no sampling, no races).
//
// Only IP is dropped. ARP and IPv6 neighbour discovery always pass (and are not counted):
// dropping them would not emulate a lossy path but stall neighbour resolution, or keep the path
// from coming up at all. Other non-IP frames pass too.
//
// Configuration is one array entry the Python side writes at any time (a new probability takes
// effect with the next packet): drop when bpf_get_prandom_u32() < threshold, i.e. with
// probability threshold / 2^32 (p < 1 by construction; p = 0 never drops).

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>  // IPPROTO_ICMPV6

#define IPV6_HDR_LEN 40
#define IPV6_NEXTHDR_OFF 6
#define ICMPV6_ND_FIRST 133  // router solicitation ... (RFC 4861 §4)
#define ICMPV6_ND_LAST 137   // ... redirect

struct loss_config {
    __u32 threshold;  // drop when bpf_get_prandom_u32() < threshold
    __u32 full_len;   // frames at least this long (MTU + Ethernet header) are "full-size"
};

// Keep in the order of STATS in netns/loss.py.
struct loss_stats {
    __u64 packets;        // IP packets seen
    __u64 dropped;        // IP packets dropped
    __u64 bytes;          // their Ethernet frame bytes
    __u64 bytes_dropped;
    __u64 full_packets;   // IP packets of at least full_len bytes
    __u64 full_dropped;
};

BPF_ARRAY(loss_config, struct loss_config, 1);
// Per CPU: XDP runs in softirq context on one CPU at a time, so plain increments are exact.
BPF_PERCPU_ARRAY(loss_stats, struct loss_stats, 1);

// IPv6 neighbour discovery (ICMPv6 directly after the fixed header, as RFC 4861 sends it).
static __always_inline int is_ndp(void *l3, void *data_end) {
    __u8 *ip6 = l3;
    if ((void *)(ip6 + IPV6_HDR_LEN + 1) > data_end)
        return 0;
    if (ip6[IPV6_NEXTHDR_OFF] != IPPROTO_ICMPV6)
        return 0;
    __u8 type = ip6[IPV6_HDR_LEN];
    return type >= ICMPV6_ND_FIRST && type <= ICMPV6_ND_LAST;
}

int lab_loss(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return XDP_PASS;
    if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
        if (is_ndp(eth + 1, data_end))
            return XDP_PASS;
    } else if (eth->h_proto != bpf_htons(ETH_P_IP)) {
        return XDP_PASS;  // ARP and everything else that is not IP
    }

    __u32 zero = 0;
    struct loss_config *cfg = loss_config.lookup(&zero);
    struct loss_stats *st = loss_stats.lookup(&zero);
    if (!cfg || !st)
        return XDP_PASS;  // cannot happen for an array map; the verifier wants the check

    __u64 len = data_end - data;
    int full = len >= cfg->full_len;
    st->packets++;
    st->bytes += len;
    if (full)
        st->full_packets++;
    if (bpf_get_prandom_u32() >= cfg->threshold)
        return XDP_PASS;
    st->dropped++;
    st->bytes_dropped += len;
    if (full)
        st->full_dropped++;
    return XDP_DROP;
}
