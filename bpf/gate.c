// usertcp gate: the only kernel part of usertcp (compiled and loaded at run time by bcc).
//
// Egress (TC clsact egress on the sender's interface): a TCP packet sent from a socket that is
// not one of the kernel's own TCP sockets passes only if its 4-tuple is a registered flow, the
// sending socket is the flow's owner (socket cookie), its sequence range lies inside the window
// the gate learned from the peer, its flags fit the flow's state, it acknowledges nothing the
// peer never sent, and its headers are sane. Kernel TCP traffic is never touched unless it
// claims an owned 4-tuple.
//
// Ingress, in two steps on the same interface. XDP first: packets of an owned flow teach the
// gate snd_una, the peer's window and the highest peer sequence (XDP_PASS). Then TC clsact
// ingress drops them, so the kernel stack, which has no socket for the flow and would answer
// with RST, never sees them. Between the two, packet taps run (__netif_receive_skb_core in
// net/core/dev.c): the sender's ETH_P_ALL socket gets its copy there. Learning must happen
// before that tap: when it happened at TC ingress, a sender on the other CPU could read an ACK
// and send into the window it opened before the gate had learned it (measured: 100 window drops
// in a 64 MiB transfer over veth).
//
// One verdict function, gate_egress_verdict(), works on a parsed header view so that other
// attach points (XDP on the peer side of the veth, for AF_XDP senders) share it.
//
// Concurrency: each flow field has one writer side (ingress writes snd_una/snd_wnd/rcv_max,
// egress writes snd_max), so concurrent CPUs can race only on reading a slightly stale value;
// the sender's own process sends from one thread.

#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/tcp.h>

#define AF_INET_ 2
#define AF_INET6_ 10
#define IP_MF_ 0x2000
#define IP_OFFMASK_ 0x1fff

#define FLOW_SYN_SENT 0     // registered; only our SYN at the ISN may leave
#define FLOW_SYNCHRONIZED 1 // the peer's SYN-ACK was seen; window learned from then on
#define FLOW_RESET 2        // the peer reset the flow; nothing more may leave

// Verdict reasons (counter indices). Keep in sync with usertcp/gate.py REASONS.
enum reason {
    EG_PASS_KERNEL = 0,  // TCP from a kernel TCP socket (or no socket), not an owned tuple
    EG_PASS_FLOW,        // owned flow, every check passed
    EG_DROP_NO_FLOW,     // TCP from a non-TCP socket for an unregistered 4-tuple
    EG_DROP_NOT_OWNER,   // owned 4-tuple, sent by a socket other than the owner
    EG_DROP_WINDOW,      // sequence range outside [snd_una, snd_una + max(wnd, mss)]
    EG_DROP_FLAGS,       // SYN not at the ISN, data before the handshake, no ACK, after RST
    EG_DROP_ACK,         // acknowledges peer sequence space never seen
    EG_DROP_MALFORMED,   // fragment, inconsistent lengths, segment or GSO size above MSS
    IN_OWNED,            // ingress packet of an owned flow: learned from, kept from the kernel
    IN_IGNORED,          // ingress packet of an owned flow that taught nothing (stale, bogus)
    IN_MALFORMED,        // ingress packet of an owned flow with inconsistent headers
    N_REASONS,
};

struct flow_key {  // as the egress direction sees it, network byte order
    __be32 saddr;
    __be32 daddr;
    __be16 sport;
    __be16 dport;
};

struct flow {
    __u64 owner;    // socket cookie of the one socket allowed to send
    __u32 isn;      // our initial sequence number (host order, as all sequence fields)
    __u32 snd_una;  // learned from the peer's cumulative ACKs
    __u32 snd_max;  // highest sequence end let out
    __u32 snd_wnd;  // the peer's window in bytes (scaled), learned
    __u32 rcv_max;  // highest peer sequence end seen
    __u16 mss;      // the peer's MSS, learned from its SYN-ACK (0 before)
    __u8 state;
    __u8 snd_wscale;  // the peer's window scale, learned from its SYN-ACK
    __u64 pkts_out;
    __u64 bytes_out;
    __u64 pkts_in;
    __u64 drops;
};

BPF_HASH(flows, struct flow_key, struct flow, 4096);
BPF_ARRAY(verdicts, __u64, N_REASONS);

// A parsed view of one IPv4/TCP packet, filled by the attach point.
struct pkt {
    __u32 saddr, daddr;  // network order
    __u16 sport, dport;  // network order
    __u32 seq, ack;      // host order
    __u16 window;        // host order, raw
    __u8 flags;          // TCP flag byte
    __u8 malformed;
    __u32 payload;       // TCP payload bytes (whole GSO super-packet)
    __u32 gso_size;      // 0 if not GSO
};

#define TH_FIN 0x01
#define TH_SYN 0x02
#define TH_RST 0x04
#define TH_ACK 0x10

static __always_inline void count(__u32 reason) {
    __u64 *c = verdicts.lookup(&reason);
    if (c)
        __sync_fetch_and_add(c, 1);
}

// Parse Ethernet/IPv4/TCP with direct packet access. Returns 0 for "not IPv4 TCP" (not ours to
// judge), 1 for a TCP packet (p->malformed says whether its headers are inconsistent).
static __always_inline int parse_tcp4(void *data, void *data_end, __u32 wire_len, struct pkt *p,
                                      struct tcphdr **tcp_out) {
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > data_end)
        return 0;
    if (eth->h_proto != bpf_htons(ETH_P_IP))
        return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > data_end)
        return 0;
    if (ip->protocol != IPPROTO_TCP)
        return 0;
    __u32 ihl = ip->ihl * 4;
    __u32 tot = bpf_ntohs(ip->tot_len);
    p->saddr = ip->saddr;
    p->daddr = ip->daddr;
    p->malformed = 0;
    if (ihl < sizeof(*ip) || ip->version != 4 ||
        (bpf_ntohs(ip->frag_off) & (IP_MF_ | IP_OFFMASK_))) {
        p->malformed = 1;  // fragments and odd IP headers are never ours
        return 1;
    }
    struct tcphdr *th = (void *)ip + ihl;
    if ((void *)(th + 1) > data_end) {
        p->malformed = 1;
        return 1;
    }
    __u32 doff = th->doff * 4;
    // A GSO super-packet's tot_len covers the whole packet (as TSO's does); it must not claim
    // more than the skb carries.
    if (doff < sizeof(*th) || tot < ihl + doff || tot + sizeof(*eth) > wire_len) {
        p->malformed = 1;
        return 1;
    }
    p->sport = th->source;
    p->dport = th->dest;
    p->seq = bpf_ntohl(th->seq);
    p->ack = bpf_ntohl(th->ack_seq);
    p->window = bpf_ntohs(th->window);
    p->flags = ((__u8 *)th)[13];
    p->payload = tot - ihl - doff;
    *tcp_out = th;
    return 1;
}

// Decide whether an outgoing TCP packet may leave. `kernel_sock` is true when the sending socket
// is one of the kernel's own TCP sockets (or there is none: kernel-generated replies).
// `*fp` is set to the flow the packet claims, if it is registered.
static __always_inline enum reason gate_egress_verdict(struct pkt *p, __u64 cookie, int kernel_sock,
                                                       struct flow **fp) {
    struct flow_key key = {.saddr = p->saddr, .daddr = p->daddr, .sport = p->sport, .dport = p->dport};
    struct flow *f = flows.lookup(&key);
    *fp = f;
    if (!f)
        return kernel_sock ? EG_PASS_KERNEL : EG_DROP_NO_FLOW;
    if (kernel_sock || cookie != f->owner)
        return EG_DROP_NOT_OWNER;
    if (p->malformed)
        return EG_DROP_MALFORMED;

    __u8 fl = p->flags;
    __u32 span = p->payload + ((fl & TH_SYN) ? 1 : 0) + ((fl & TH_FIN) ? 1 : 0);
    if (fl & TH_SYN) {
        // Only our SYN, at the ISN, before the handshake completed, without data or ACK.
        if (f->state != FLOW_SYN_SENT || (fl & (TH_ACK | TH_FIN | TH_RST)) || p->seq != f->isn || p->payload)
            return EG_DROP_FLAGS;
        if ((__s32)(f->isn + 1 - f->snd_max) > 0)
            f->snd_max = f->isn + 1;
        return EG_PASS_FLOW;
    }
    if (f->state != FLOW_SYNCHRONIZED)
        return EG_DROP_FLAGS;
    if (!(fl & (TH_ACK | TH_RST)))
        return EG_DROP_FLAGS;
    // Segment (or GSO segment) size: nothing bigger than the peer's MSS goes on the wire.
    if (p->gso_size ? p->gso_size > f->mss : p->payload > f->mss)
        return EG_DROP_MALFORMED;

    __u32 wnd = f->snd_wnd > f->mss ? f->snd_wnd : f->mss;  // max(window, 1 MSS): window probes
    __s32 from_una = (__s32)(p->seq - f->snd_una);
    if (from_una < 0)
        return EG_DROP_WINDOW;
    // The FIN takes one sequence number beyond the data; let it sit just past the window.
    __u32 data_end = (__u32)from_una + p->payload;
    if (data_end > wnd)
        return EG_DROP_WINDOW;
    if (fl & TH_RST) {
        if ((__u32)from_una > wnd)
            return EG_DROP_FLAGS;
    } else if ((__s32)(p->ack - f->rcv_max) > 0) {
        return EG_DROP_ACK;
    }
    __u32 end = p->seq + span;
    if ((__s32)(end - f->snd_max) > 0)
        f->snd_max = end;
    return EG_PASS_FLOW;
}

// Learn from the SYN-ACK's options: the peer's MSS and window scale (RFC 7323 §2.2).
static __always_inline void learn_syn_options(struct tcphdr *th, void *data_end, struct flow *f) {
    __u8 *opt = (__u8 *)(th + 1);
    __u32 len = th->doff * 4 - sizeof(*th);
    __u32 i = 0;
    f->mss = 536;  // RFC 9293 §3.7.1 default
    f->snd_wscale = 0;
#pragma unroll
    for (int n = 0; n < 20; n++) {
        if (i >= len || i > 38)
            break;
        __u8 *o = opt + i;
        if ((void *)(o + 1) > data_end)
            break;
        __u8 kind = o[0];
        if (kind == 0)
            break;
        if (kind == 1) {
            i += 1;
            continue;
        }
        if ((void *)(o + 2) > data_end)
            break;
        __u8 olen = o[1];
        if (olen < 2)
            break;
        if (kind == 2 && olen == 4 && (void *)(o + 4) <= data_end)
            f->mss = ((__u16)o[2] << 8) | o[3];
        if (kind == 3 && olen == 3 && (void *)(o + 3) <= data_end)
            f->snd_wscale = o[2] > 14 ? 14 : o[2];
        i += olen;
    }
}

// Learn from one incoming packet of an owned flow (XDP, before the packet taps).
static __always_inline void gate_ingress_learn(void *data, void *data_end, __u32 wire_len) {
    struct pkt p = {};
    struct tcphdr *th = 0;
    if (!parse_tcp4(data, data_end, wire_len, &p, &th))
        return;
    struct flow_key key = {.saddr = p.daddr, .daddr = p.saddr, .sport = p.dport, .dport = p.sport};
    struct flow *f = flows.lookup(&key);
    if (!f)
        return;
    __sync_fetch_and_add(&f->pkts_in, 1);
    if (p.malformed || !th) {
        count(IN_MALFORMED);
        return;
    }
    __u8 fl = p.flags;
    if ((fl & TH_SYN) && (fl & TH_ACK)) {
        if (f->state == FLOW_SYN_SENT && p.ack == f->isn + 1) {
            learn_syn_options(th, data_end, f);
            f->rcv_max = p.seq + 1;
            f->snd_una = f->isn + 1;
            f->snd_wnd = p.window;  // never scaled in a SYN
            f->state = FLOW_SYNCHRONIZED;
            count(IN_OWNED);
        } else {
            count(IN_IGNORED);  // a retransmitted SYN-ACK teaches nothing new
        }
        return;
    }
    if (f->state != FLOW_SYNCHRONIZED) {
        count(IN_IGNORED);
        return;
    }
    if (fl & TH_RST) {
        // RFC 5961 §3.2: only an exact match resets.
        if (p.seq == f->rcv_max)
            f->state = FLOW_RESET;
        count(IN_OWNED);
        return;
    }
    int learned = 0;
    if (fl & TH_ACK) {
        __s32 adv = (__s32)(p.ack - f->snd_una);
        // Accept ACKs in [snd_una, snd_max]: an ACK beyond what left is forged or stale.
        if (adv >= 0 && (__s32)(p.ack - f->snd_max) <= 0) {
            f->snd_una = p.ack;
            f->snd_wnd = (__u32)p.window << f->snd_wscale;
            learned = 1;
        }
    }
    __u32 end = p.seq + p.payload + ((fl & TH_FIN) ? 1 : 0);
    if ((__s32)(end - f->rcv_max) > 0 && (__s32)(p.seq - f->rcv_max) <= 0) {
        f->rcv_max = end;
        learned = 1;
    }
    count(learned ? IN_OWNED : IN_IGNORED);
}

// Whether an incoming packet belongs to an owned flow (TC ingress: then it is dropped).
static __always_inline int gate_ingress_owned(void *data, void *data_end, __u32 wire_len) {
    struct pkt p = {};
    struct tcphdr *th = 0;
    if (!parse_tcp4(data, data_end, wire_len, &p, &th))
        return 0;
    struct flow_key key = {.saddr = p.daddr, .daddr = p.saddr, .sport = p.dport, .dport = p.sport};
    return flows.lookup(&key) != 0;
}

static __always_inline int sock_is_kernel_tcp(struct __sk_buff *skb) {
    struct bpf_sock *sk = skb->sk;
    if (!sk)
        return 1;  // kernel-generated (no socket), never a user-space sender
    sk = bpf_sk_fullsock(sk);
    if (!sk)
        return 1;  // request and time-wait minisocks are the kernel's TCP
    return (sk->family == AF_INET_ || sk->family == AF_INET6_) && sk->protocol == IPPROTO_TCP;
}

// Headers must be in the linear area for direct packet access; packet sockets and veth put them
// there, but make sure (a no-op when they already are). 134 = Ethernet + the largest IPv4 and
// TCP headers.
static __always_inline void skb_headers(struct __sk_buff *skb, void **data, void **data_end) {
    __u32 want = skb->len < 134 ? skb->len : 134;
    bpf_skb_pull_data(skb, want);
    *data = (void *)(long)skb->data;
    *data_end = (void *)(long)skb->data_end;
}

int gate_tc_egress(struct __sk_buff *skb) {
    if (skb->protocol != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    void *data, *data_end;
    skb_headers(skb, &data, &data_end);
    struct pkt p = {};
    struct tcphdr *th = 0;
    if (!parse_tcp4(data, data_end, skb->len, &p, &th))
        return TC_ACT_OK;
    p.gso_size = skb->gso_size;
    int kernel_sock = sock_is_kernel_tcp(skb);
    __u64 cookie = kernel_sock ? 0 : bpf_get_socket_cookie(skb);
    struct flow *f = 0;
    enum reason r = gate_egress_verdict(&p, cookie, kernel_sock, &f);
    count(r);
    if (r == EG_PASS_KERNEL)
        return TC_ACT_OK;
    if (r == EG_PASS_FLOW) {
        if (f) {
            __sync_fetch_and_add(&f->pkts_out, 1);
            __sync_fetch_and_add(&f->bytes_out, p.payload);
        }
        return TC_ACT_OK;
    }
    if (f)
        __sync_fetch_and_add(&f->drops, 1);
    return TC_ACT_SHOT;
}

int gate_tc_ingress(struct __sk_buff *skb) {
    if (skb->protocol != bpf_htons(ETH_P_IP))
        return TC_ACT_OK;
    void *data, *data_end;
    skb_headers(skb, &data, &data_end);
    return gate_ingress_owned(data, data_end, skb->len) ? TC_ACT_SHOT : TC_ACT_OK;
}

int gate_xdp_ingress(struct xdp_md *ctx) {
    void *data = (void *)(long)ctx->data;
    void *data_end = (void *)(long)ctx->data_end;
    gate_ingress_learn(data, data_end, (__u32)(data_end - data));
    return XDP_PASS;
}
