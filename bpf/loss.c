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
// effect with the next packet): drop when a 32-bit random number < threshold, i.e. with
// probability threshold / 2^32 (p < 1 by construction; p = 0 never drops).
//
// The random number is bpf_get_prandom_u32() unless a seed is set. With a seed, the n-th IP
// packet since the seed was (re)set is dropped or not as a fixed function of (seed, n): the
// SplitMix64 output function (Steele, Lea, Flood, "Fast splittable pseudorandom number
// generators", OOPSLA 2014) of seed + n * golden ratio. Two runs over the same path then see
// the same loss pattern packet by packet (netem's `seed` does the same since Linux 6.7): a
// comparison of two senders under 0.5% loss is no longer decided by which run drew fewer
// losses (about 70 per 30 s flow at 5 Mbit/s, so +-12% by chance alone). n is one counter
// shared by all CPUs, advanced atomically, so the numbering is the order packets reach it.

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/in6.h>  // IPPROTO_ICMPV6

#define IPV6_HDR_LEN 40
#define IPV6_NEXTHDR_OFF 6
#define ICMPV6_ND_FIRST 133  // router solicitation ... (RFC 4861 §4)
#define ICMPV6_ND_LAST 137   // ... redirect

struct loss_config {
    __u32 threshold;  // drop when the packet's random number < threshold
    __u32 full_len;   // frames at least this long (MTU + Ethernet header) are "full-size"
    __u64 seed;       // 0: bpf_get_prandom_u32(); else the deterministic pattern above
    __u64 next;       // with a seed: the index of the next IP packet
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

static __always_inline __u32 draw(struct loss_config *cfg) {
    if (!cfg->seed)
        return bpf_get_prandom_u32();
    __u64 n = __sync_fetch_and_add(&cfg->next, 1);
    __u64 z = cfg->seed + n * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    return (__u32)(z >> 32);
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
    if (draw(cfg) >= cfg->threshold)
        return XDP_PASS;
    st->dropped++;
    st->bytes_dropped += len;
    if (full)
        st->full_dropped++;
    return XDP_DROP;
}
