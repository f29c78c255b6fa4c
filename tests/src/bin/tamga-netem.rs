//! `tamga-netem`: latency, jitter (hence reordering) and loss for the network fault tests,
//! on kernels built without `sch_netem`. Run inside a namespace whose iptables send packets
//! to NFQUEUE `--queue N`; it holds each queued packet for `delay ± jitter` milliseconds
//! (uniform), drops a `loss` share of them, and lets the rest through. Verdicts are given
//! in deadline order, not arrival order, so jitter reorders packets as `netem` does.
//!
//! It speaks the nfnetlink_queue protocol directly on a netlink socket (the socket is
//! bound by the kernel on the first send). It never touches a packet's bytes: it copies
//! only the metadata. It runs until it is killed.
//!
//! Usage: `tamga-netem --queue 0 --delay-ms 200 --jitter-ms 50 --loss 0.05`

use std::collections::BinaryHeap;
use std::io::Read;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

const AF_NETLINK: i32 = 16;
const AF_INET: u16 = 2;
const SOCK_RAW: i32 = 3;
const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// Packets the kernel may hold for us at once; beyond it, it drops (as a full link would).
const QUEUE_MAXLEN: u32 = 16_384;
/// How often the loop wakes to release due packets when none arrive.
const TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy)]
struct Args {
    queue: u16,
    delay_ms: f64,
    jitter_ms: f64,
    loss: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args { queue: 0, delay_ms: 0.0, jitter_ms: 0.0, loss: 0.0 };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--queue" => a.queue = value.parse().map_err(|e| format!("--queue {value:?}: {e}"))?,
            "--delay-ms" => a.delay_ms = num(&value)?,
            "--jitter-ms" => a.jitter_ms = num(&value)?,
            "--loss" => a.loss = num(&value)?,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if !(0.0..=1.0).contains(&a.loss) || a.delay_ms < 0.0 || a.jitter_ms < 0.0 || a.jitter_ms > a.delay_ms {
        return Err("need 0 <= loss <= 1 and 0 <= jitter <= delay".into());
    }
    Ok(a)
}

/// xorshift64*: enough randomness for loss and jitter, seeded from the clock.
#[derive(Debug)]
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One netlink message of the queue subsystem: header, nfgenmsg, then `attrs`.
fn message(kind: u16, queue: u16, attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0u8, 0u8]; // nfgen_family AF_UNSPEC, version NFNETLINK_V0
    body.extend_from_slice(&queue.to_be_bytes());
    for (ty, data) in attrs {
        let len = 4 + data.len();
        body.extend_from_slice(&(len as u16).to_ne_bytes());
        body.extend_from_slice(&ty.to_ne_bytes());
        body.extend_from_slice(data);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    let mut out = Vec::with_capacity(16 + body.len());
    out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    out.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes()); // seq
    out.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel
    out.extend_from_slice(&body);
    out
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// The packet ids in one datagram from the kernel (several messages may share it);
/// a netlink error message becomes an error.
fn packet_ids(buf: &[u8]) -> Result<Vec<u32>, String> {
    let mut ids = Vec::new();
    let mut at = 0;
    while let (Some(len), Some(ty)) = (u32_at(buf, at), u16_at(buf, at + 4)) {
        let len = len as usize;
        let Some(msg) = buf.get(at..at + len).filter(|_| len >= 16) else { break };
        if ty == NLMSG_ERROR {
            let errno = u32_at(msg, 16).map_or(0, |e| e as i32);
            if errno != 0 {
                return Err(format!("netlink error {errno}"));
            }
        } else if ty == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            let mut a = 20; // nlmsghdr + nfgenmsg
            while let (Some(alen), Some(aty)) = (u16_at(msg, a), u16_at(msg, a + 2)) {
                let alen = alen as usize;
                if alen < 4 {
                    break;
                }
                if aty & 0x3fff == NFQA_PACKET_HDR {
                    if let Some(id) = msg.get(a + 4..a + 8) {
                        ids.push(u32::from_be_bytes(id.try_into().map_err(|_| "short header")?));
                    }
                }
                a += alen.next_multiple_of(4);
            }
        }
        at += len.next_multiple_of(4);
    }
    Ok(ids)
}

fn run(args: Args) -> Result<(), String> {
    let io = |what: &'static str| move |e: std::io::Error| format!("{what}: {e}");
    let sock =
        Socket::new(Domain::from(AF_NETLINK), Type::from(SOCK_RAW), Some(Protocol::from(NETLINK_NETFILTER)))
            .map_err(io("netlink socket"))?;
    sock.set_recv_buffer_size(8 << 20).map_err(io("receive buffer"))?;
    let mut cmd = vec![NFQNL_CFG_CMD_BIND, 0];
    cmd.extend_from_slice(&AF_INET.to_be_bytes());
    sock.send(&message(NFQNL_MSG_CONFIG, args.queue, &[(NFQA_CFG_CMD, cmd)])).map_err(io("bind queue"))?;
    let mut params = 0xffffu32.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_META);
    let maxlen = QUEUE_MAXLEN.to_be_bytes().to_vec();
    sock.send(&message(
        NFQNL_MSG_CONFIG,
        args.queue,
        &[(NFQA_CFG_PARAMS, params), (NFQA_CFG_QUEUE_MAXLEN, maxlen)],
    ))
    .map_err(io("queue parameters"))?;
    sock.set_read_timeout(Some(TICK)).map_err(io("timeout"))?;

    let seed =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng(seed | 1);
    let mut due: BinaryHeap<std::cmp::Reverse<(Instant, u32)>> = BinaryHeap::new();
    let mut buf = vec![0u8; 1 << 16];
    let verdict = |id: u32, v: u32| {
        let mut hdr = v.to_be_bytes().to_vec();
        hdr.extend_from_slice(&id.to_be_bytes());
        sock.send(&message(NFQNL_MSG_VERDICT, args.queue, &[(NFQA_VERDICT_HDR, hdr)]))
    };
    loop {
        match (&sock).read(&mut buf) {
            Ok(n) => {
                for id in packet_ids(buf.get(..n).unwrap_or_default())? {
                    if rng.unit() < args.loss {
                        verdict(id, NF_DROP).map_err(io("verdict"))?;
                        continue;
                    }
                    let ms = args.delay_ms + (2.0 * rng.unit() - 1.0) * args.jitter_ms;
                    due.push(std::cmp::Reverse((Instant::now() + Duration::from_secs_f64(ms / 1000.0), id)));
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            // ENOBUFS: the kernel dropped messages for us (a burst); the packets it could
            // not tell us about are lost, as on a congested link. Carry on.
            Err(e) if e.raw_os_error() == Some(105) => {}
            Err(e) => return Err(format!("receive: {e}")),
        }
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, id))) = due.peek().copied() {
            if at > now {
                break;
            }
            due.pop();
            verdict(id, NF_ACCEPT).map_err(io("verdict"))?;
        }
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tamga-netem: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("tamga-netem: {e}");
        std::process::exit(1);
    }
}
