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
// Two ways a flow comes to exist:
//  * active open: the sender registers the 4-tuple with its socket cookie and ISN before its
//    SYN leaves (FLOW_SYN_SENT); the peer's SYN-ACK synchronizes it.
//  * passive open: a server registers a *listener* (local address, port) -> owner cookie once.
//    A SYN (no ACK) to it from a 4-tuple the gate does not know makes XDP create the flow itself
//    (FLOW_SYN_RCVD, owner = the listener's), learning the peer's ISN, MSS, window scale and
//    window from the SYN: no per-connection round trip to user space. The owner's first SYN-ACK
//    fixes our ISN; the peer's ACK of it (ack == ISN + 1, seq == peer ISN + 1) synchronizes the
//    flow, and from then on it is like any other. Removing flows stays the owner's job.
//    - A SYN for a 4-tuple already in the table (any state) teaches nothing (IN_IGNORED), be its
//      sequence the same (a retransmission) or not. RFC 9293 §3.10.7.4 would move a SYN-RECEIVED
//      connection back to LISTEN, and RFC 5961 §4 answers SYNs in synchronized states with a
//      challenge ACK rather than acting on them: either way the SYN itself must not rewrite the
//      flow, or a blind attacker who guesses a 4-tuple could move its sequence space. The owner
//      sees the SYN (its tap runs before TC ingress drops it) and decides; to accept a new
//      incarnation it revokes the flow and the peer's next SYN retransmission creates it anew.
//    - The table may be full (a SYN flood): nothing is created, IN_SYN_TABLE_FULL counts it, and
//      TC ingress still keeps the SYN from the kernel (which would RST it): the peer retries, as
//      with a full listen backlog.
//    - Packets to a listener port that are not SYNs and belong to no flow (IN_LISTEN_STRAY) are
//      left to the kernel, which answers them with RST — the reply RFC 9293 §3.10.7.1/.2 asks
//      for a segment of an unknown connection (unless it is a RST itself), and what the owner
//      cannot send itself (the egress verdict admits only registered flows). They are late
//      packets of a connection the owner already revoked, or forged; a prompt RST beats a peer
//      retransmitting into silence. A flow must therefore live as long as its connection can
//      still receive (through TIME-WAIT when the server closed first).
//
// One verdict function, gate_egress_verdict(), works on a parsed header view so that other
// attach points (XDP on the peer side of the veth, for AF_XDP senders) share it.
//
// Concurrency: each flow field has one writer side (ingress writes snd_una/snd_wnd/rcv_max/
// state, egress writes snd_max), so concurrent CPUs can race only on reading a slightly stale
// value; the sender's own process sends from one thread. One exception, ordered by causality:
// in FLOW_SYN_RCVD the owner's first SYN-ACK (egress) writes isn, snd_una, snd_max, snd_wscale
// and isn_known once; ingress reads them only when the peer's ACK of that SYN-ACK arrives.

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
#define EEXIST_ 17

#ifndef MAX_FLOWS
#define MAX_FLOWS 65536  // allocated on demand (BPF_F_NO_PREALLOC): a bound, not a reservation
#endif
#ifndef MAX_LISTENERS
#define MAX_LISTENERS 1024
#endif

#define FLOW_SYN_SENT 0     // registered; only our SYN at the ISN may leave
#define FLOW_SYNCHRONIZED 1 // the handshake completed; window learned from then on
#define FLOW_RESET 2        // the peer reset the flow; nothing more may leave
#define FLOW_SYN_RCVD 3     // created by the peer's SYN to a listener; only our SYN-ACK (or RST)

// Verdict reasons (counter indices). Keep in sync with usertcp/gate.py REASONS; append only.
enum reason {
    EG_PASS_KERNEL = 0,  // TCP from a kernel TCP socket (or no socket), not an owned tuple
    EG_PASS_FLOW,        // owned flow, every check passed
    EG_DROP_NO_FLOW,     // TCP from a non-TCP socket for an unregistered 4-tuple
    EG_DROP_NOT_OWNER,   // owned 4-tuple, sent by a socket other than the owner
    EG_DROP_WINDOW,      // sequence range outside [snd_una, snd_una + max(wnd, mss)]
    EG_DROP_FLAGS,       // SYN(-ACK) not at the ISN, data before the handshake, no ACK, after RST
    EG_DROP_ACK,         // acknowledges peer sequence space never seen; SYN-ACK ack != peer ISN+1
    EG_DROP_MALFORMED,   // fragment, inconsistent lengths, segment or GSO size above MSS
    IN_OWNED,            // ingress packet of an owned flow: learned from, kept from the kernel
    IN_IGNORED,          // ingress packet of an owned flow that taught nothing (stale, bogus)
    IN_MALFORMED,        // ingress packet of an owned flow with inconsistent headers
    IN_SYN_NEW_FLOW,     // SYN to a listener: flow created in FLOW_SYN_RCVD, kept from the kernel
    IN_SYN_TABLE_FULL,   // SYN to a listener, flow table full: nothing created, kept from the kernel
    IN_LISTEN_STRAY,     // non-SYN to a listener port, no flow: left to the kernel (RST in reply)
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
    __u16 mss;      // the peer's MSS, learned from its SYN or SYN-ACK (0 before)
    __u8 state;
    __u8 snd_wscale;  // the peer's window scale, learned from its SYN or SYN-ACK
    __u64 pkts_out;
    __u64 bytes_out;
    __u64 pkts_in;
    __u64 drops;
    __u64 born_ns;    // CLOCK_MONOTONIC when created (by the registrant, or by XDP for a SYN)
    __u8 passive;     // 1: created by the gate from a SYN to a listener
    __u8 isn_known;   // our ISN is fixed: registered (active) or the first SYN-ACK let out
    __u8 pad[6];
};

struct listen_key {  // network byte order; addr 0 is any local address
    __be32 addr;
    __be16 port;
    __u16 pad;
};

struct listener {
    __u64 owner;       // socket cookie that will own the flows this listener's SYNs create
    __u64 syns;        // flows created
    __u64 table_full;  // SYNs refused because the flow table was full
};

BPF_F_TABLE("hash", struct flow_key, struct flow, flows, MAX_FLOWS, BPF_F_NO_PREALLOC);
BPF_HASH(listeners, struct listen_key, struct listener, MAX_LISTENERS);
BPF_ARRAY(verdicts, __u64, N_REASONS);

#define WSCALE_NONE 0xff

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
    __u16 opt_mss;       // SYN segments only (when parsed): MSS option, 536 if absent
    __u8 opt_wscale;     // SYN segments only (when parsed): window scale, WSCALE_NONE if absent
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

// The MSS and window scale options of a SYN or SYN-ACK (RFC 9293 §3.7.1, RFC 7323 §2.2).
static __always_inline void parse_syn_options(struct tcphdr *th, void *data_end, struct pkt *p) {
    __u8 *opt = (__u8 *)(th + 1);
    __u32 len = th->doff * 4 - sizeof(*th);
    __u32 i = 0;
    p->opt_mss = 536;  // RFC 9293 §3.7.1 default
    p->opt_wscale = WSCALE_NONE;
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
            p->opt_mss = ((__u16)o[2] << 8) | o[3];
        if (kind == 3 && olen == 3 && (void *)(o + 3) <= data_end)
            p->opt_wscale = o[2] > 14 ? 14 : o[2];  // RFC 7323 §2.3
        i += olen;
    }
}

// Parse Ethernet/IPv4/TCP with direct packet access. Returns 0 for "not IPv4 TCP" (not ours to
// judge), 1 for a TCP packet (p->malformed says whether its headers are inconsistent). With
// `syn_opts`, a SYN's MSS and window scale options are parsed too.
static __always_inline int parse_tcp4(void *data, void *data_end, __u32 wire_len, struct pkt *p,
                                      struct tcphdr **tcp_out, int syn_opts) {
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
    if (syn_opts && (p->flags & TH_SYN))
        parse_syn_options(th, data_end, p);
    *tcp_out = th;
    return 1;
}

// The listener for a packet's destination: the exact address first, then the wildcard.
static __always_inline struct listener *find_listener(__be32 addr, __be16 port) {
    struct listen_key lk = {.addr = addr, .port = port};
    struct listener *l = listeners.lookup(&lk);
    if (l)
        return l;
    lk.addr = 0;
    return listeners.lookup(&lk);
}

// Decide whether an outgoing TCP packet may leave. `kernel_sock` is true when the sending socket
// is one of the kernel's own TCP sockets (or there is none: kernel-generated replies).
// `*fp` is set to the flow the packet claims, if it is registered. SYN segments must come with
// their options parsed (parse_tcp4 with syn_opts).
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
    if (f->state == FLOW_SYN_RCVD) {
        if (fl & TH_SYN) {
            // Only our SYN-ACK: it acknowledges exactly the peer's SYN, carries no data, no FIN
            // or RST, and all copies of it share one ISN (the first one fixes it).
            if (!(fl & TH_ACK) || (fl & (TH_FIN | TH_RST)) || p->payload)
                return EG_DROP_FLAGS;
            if (p->ack != f->rcv_max)
                return EG_DROP_ACK;
            if (f->isn_known)
                return p->seq == f->isn ? EG_PASS_FLOW : EG_DROP_FLAGS;
            f->isn = p->seq;
            f->snd_una = p->seq;
            f->snd_max = p->seq + 1;
            // RFC 7323 §2.2: the peer's windows are scaled only if both SYNs carry the option.
            if (p->opt_wscale == WSCALE_NONE)
                f->snd_wscale = 0;
            f->isn_known = 1;
            return EG_PASS_FLOW;
        }
        // Nothing else before the handshake completes but a RST answering the peer's segment
        // (RFC 9293 §3.10.7.1): at seq 0 while our ISN is unknown (the peer's SYN carried no
        // ACK), at ISN + 1 after our SYN-ACK; if it acknowledges, exactly the peer's SYN.
        if (!(fl & TH_RST) || (fl & TH_FIN) || p->payload)
            return EG_DROP_FLAGS;
        if (p->seq != (f->isn_known ? f->isn + 1 : 0))
            return EG_DROP_FLAGS;
        if ((fl & TH_ACK) && p->ack != f->rcv_max)
            return EG_DROP_ACK;
        return EG_PASS_FLOW;
    }
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

// A SYN (no ACK) for a 4-tuple the gate does not know: if it is addressed to a listener, create
// the flow in FLOW_SYN_RCVD from what the SYN says (see the top of this file).
static __always_inline void gate_ingress_syn(struct pkt *p, struct flow_key *key) {
    if (p->flags & (TH_ACK | TH_RST | TH_FIN))
        return;  // SYN+RST / SYN+FIN: never a connection request (TC ingress still drops them)
    struct listener *l = find_listener(p->daddr, p->dport);
    if (!l)
        return;
    struct flow f = {};
    f.owner = l->owner;
    f.state = FLOW_SYN_RCVD;
    f.passive = 1;
    f.rcv_max = p->seq + 1;
    f.mss = p->opt_mss;
    // RFC 7323 §2.2: without the option in the peer's SYN no scaling applies either way; with
    // it, it applies if our SYN-ACK carries the option too (checked when the SYN-ACK leaves).
    f.snd_wscale = p->opt_wscale == WSCALE_NONE ? 0 : p->opt_wscale;
    f.snd_wnd = p->window;  // never scaled in a SYN (RFC 7323 §2.2)
    f.pkts_in = 1;
    f.born_ns = bpf_ktime_get_ns();
    int err = flows.insert(key, &f);
    if (err == 0) {
        __sync_fetch_and_add(&l->syns, 1);
        count(IN_SYN_NEW_FLOW);
    } else if (err == -EEXIST_) {
        count(IN_IGNORED);  // the same SYN, created by another CPU a moment ago
    } else {
        __sync_fetch_and_add(&l->table_full, 1);  // -E2BIG (full) or -ENOMEM
        count(IN_SYN_TABLE_FULL);
    }
}

// Learn from one incoming packet of an owned flow, or create a flow from a SYN to a listener
// (XDP, before the packet taps).
static __always_inline void gate_ingress_learn(void *data, void *data_end, __u32 wire_len) {
    struct pkt p = {};
    struct tcphdr *th = 0;
    if (!parse_tcp4(data, data_end, wire_len, &p, &th, 1))
        return;
    struct flow_key key = {.saddr = p.daddr, .daddr = p.saddr, .sport = p.dport, .dport = p.sport};
    struct flow *f = flows.lookup(&key);
    if (!f) {
        if (!p.malformed && th && (p.flags & TH_SYN))
            gate_ingress_syn(&p, &key);
        return;
    }
    __sync_fetch_and_add(&f->pkts_in, 1);
    if (p.malformed || !th) {
        count(IN_MALFORMED);
        return;
    }
    __u8 fl = p.flags;
    if (fl & TH_SYN) {
        if ((fl & TH_ACK) && f->state == FLOW_SYN_SENT && p.ack == f->isn + 1 && !(fl & TH_RST)) {
            f->mss = p.opt_mss;
            f->snd_wscale = p.opt_wscale == WSCALE_NONE ? 0 : p.opt_wscale;
            f->rcv_max = p.seq + 1;
            f->snd_una = f->isn + 1;
            f->snd_wnd = p.window;  // never scaled in a SYN
            f->state = FLOW_SYNCHRONIZED;
            count(IN_OWNED);
        } else {
            // A retransmitted SYN-ACK, or a SYN for a known 4-tuple (same sequence or not):
            // nothing to learn, and a SYN must not rewrite the flow (top of this file).
            count(IN_IGNORED);
        }
        return;
    }
    if (f->state == FLOW_SYN_RCVD) {
        if (fl & TH_RST) {
            // RFC 5961 §3.2: only an exact match resets.
            if (p.seq == f->rcv_max) {
                f->state = FLOW_RESET;
                count(IN_OWNED);
            } else {
                count(IN_IGNORED);
            }
            return;
        }
        // The peer's ACK of our SYN-ACK (RFC 9293 §3.10.7.4, fifth: SND.UNA < SEG.ACK =<
        // SND.NXT, i.e. exactly ISN + 1), at its next sequence. It may carry data already.
        if (!(fl & TH_ACK) || !f->isn_known || p.ack != f->isn + 1 || p.seq != f->rcv_max) {
            count(IN_IGNORED);
            return;
        }
        f->state = FLOW_SYNCHRONIZED;  // snd_una, snd_wnd and rcv_max follow below
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

// Whether TC ingress must keep an incoming packet from the kernel stack: every packet of an
// owned flow, and every SYN (no ACK) to a listener (the flow XDP made for it, or none when the
// table was full). Other packets to a listener port without a flow go on to the kernel.
static __always_inline int gate_ingress_owned(void *data, void *data_end, __u32 wire_len) {
    struct pkt p = {};
    struct tcphdr *th = 0;
    if (!parse_tcp4(data, data_end, wire_len, &p, &th, 0))
        return 0;
    struct flow_key key = {.saddr = p.daddr, .daddr = p.saddr, .sport = p.dport, .dport = p.sport};
    if (flows.lookup(&key))
        return 1;
    if (p.malformed || !th)
        return 0;
    if (!find_listener(p.daddr, p.dport))
        return 0;
    if ((p.flags & (TH_SYN | TH_ACK)) == TH_SYN)
        return 1;
    count(IN_LISTEN_STRAY);
    return 0;
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
    if (!parse_tcp4(data, data_end, skb->len, &p, &th, 1))
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
