//! Topics over real sockets: publish once to many subscribers, order per publisher, the
//! slow-subscriber policies (the limit measured, never passed), churn, and members that close
//! while messages are published to them.

mod common;
mod harden;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestServer;
use harden::Client;
use wsreactor::{
    Close, Config, Conn, ConnId, Ctx, Handler, Message, Published, Request, SlowSubscriber,
};

const ROOM: &[u8] = b"room";
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// What the room saw, shared with the test.
#[derive(Debug, Default)]
struct Seen {
    members: Vec<ConnId>,
    /// The most any member had unwritten right after a publish.
    max_buffered: usize,
    published: Published,
    closed: usize,
}

/// Every connection joins [`ROOM`]. A text message is published to the others, except the
/// commands `flood N SIZE` (publish N binary messages of SIZE bytes), `leave` and `join`.
struct Room(Arc<Mutex<Seen>>);

impl Room {
    fn add(&self, published: Published) {
        let mut seen = self.0.lock().unwrap();
        let total = &mut seen.published;
        total.delivered += published.delivered;
        total.dropped += published.dropped;
        total.closed += published.closed;
        total.skipped += published.skipped;
    }

    /// Records the largest backlog among the members after a publish.
    fn measure(&self, conn: &mut Conn<'_>) {
        let members = self.0.lock().unwrap().members.clone();
        let mut most = conn.buffered_amount();
        for id in members {
            if let Some(member) = conn.ctx().conn(id) {
                most = most.max(member.buffered_amount());
            }
        }
        let mut seen = self.0.lock().unwrap();
        seen.max_buffered = seen.max_buffered.max(most);
    }
}

impl Handler for Room {
    fn on_open(&mut self, conn: &mut Conn<'_>, _request: &Request<'_>) {
        assert_eq!(conn.subscribe(ROOM), Ok(true));
        self.0.lock().unwrap().members.push(conn.id());
    }

    fn on_message(&mut self, conn: &mut Conn<'_>, message: Message<'_>) {
        let Message::Text(text) = message else {
            return;
        };
        let words: Vec<&str> = text.split(' ').collect();
        match words[..] {
            ["flood", n, size] => {
                let payload = vec![0x5a; size.parse().unwrap()];
                for _ in 0..n.parse::<usize>().unwrap() {
                    let published = conn.publish(ROOM, Message::Binary(&payload), false);
                    self.add(published);
                    self.measure(conn);
                }
            }
            ["leave"] => assert!(conn.unsubscribe(ROOM)),
            ["join"] => assert_eq!(conn.subscribe(ROOM), Ok(true)),
            ["count"] => {
                let reply = format!(
                    "{} {}",
                    conn.ctx().subscriber_count(ROOM),
                    conn.topic_count()
                );
                let _ = conn.send_text(&reply);
            }
            _ => self.add(conn.publish(ROOM, message, false)),
        }
    }

    fn on_close(&mut self, ctx: &mut Ctx<'_>, id: ConnId, _close: Close<'_>) {
        assert_eq!(
            ctx.topic_count(id),
            0,
            "a closing connection left its topics"
        );
        let mut seen = self.0.lock().unwrap();
        seen.members.retain(|&m| m != id);
        seen.closed += 1;
    }
}

fn start(config: Config) -> (TestServer, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    (TestServer::start(config, Room(seen.clone())), seen)
}

/// Waits until the room has `n` members (each joins in its `on_open`).
fn wait_members(seen: &Mutex<Seen>, n: usize) {
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    while seen.lock().unwrap().members.len() != n {
        assert!(
            std::time::Instant::now() < deadline,
            "members never reached {n}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn every_subscriber_gets_every_message_in_each_publishers_order() {
    let (server, seen) = start(Config::default());
    let mut publishers: Vec<Client> = (0..3).map(|_| Client::ws(server.addr)).collect();
    let mut subscribers: Vec<Client> = (0..20).map(|_| Client::ws(server.addr)).collect();
    wait_members(&seen, 23);
    const EACH: usize = 200;
    for seq in 0..EACH {
        for (p, publisher) in publishers.iter_mut().enumerate() {
            publisher.send_text(&format!("{p}:{seq}"));
        }
    }
    for subscriber in &mut subscribers {
        let mut next = [0usize; 3];
        for _ in 0..3 * EACH {
            let frame = subscriber.read_frame().expect("a published message");
            let text = String::from_utf8(frame.payload).unwrap();
            let (p, seq) = text.split_once(':').unwrap();
            let (p, seq): (usize, usize) = (p.parse().unwrap(), seq.parse().unwrap());
            assert_eq!(seq, next[p], "publisher {p} out of order or lost");
            next[p] += 1;
        }
        assert_eq!(next, [EACH; 3]);
    }
    // Each publisher got the others' messages, never its own.
    for (p, publisher) in publishers.iter_mut().enumerate() {
        for _ in 0..2 * EACH {
            let frame = publisher.read_frame().unwrap();
            assert!(!frame.payload.starts_with(format!("{p}:").as_bytes()));
        }
    }
    let published = seen.lock().unwrap().published;
    assert_eq!(published.delivered, 3 * EACH * 22);
    assert_eq!(published.skipped, 3 * EACH, "the sender is left out");
}

/// A subscriber that stops reading is closed with 1008 once the next message would pass the
/// limit; its backlog never passes it, nothing follows its close, and the others get all.
#[test]
fn a_slow_subscriber_is_closed_at_the_limit_and_gets_nothing_after_the_close() {
    const LIMIT: usize = 256 * 1024;
    let (server, seen) = start(Config {
        max_subscriber_backlog: LIMIT,
        slow_subscriber: SlowSubscriber::Close,
        ..Config::default()
    });
    let mut publisher = Client::ws(server.addr);
    let mut slow = Client::ws_small_buffers(server.addr, 4096, 4096);
    let mut fast = Client::ws(server.addr);
    wait_members(&seen, 3);
    // 75 batches of 40 × 4 KiB (160 KiB each, under the limit), 12 MiB in all: far past the
    // limit and past what the kernel's socket buffers hold for a reader that has stopped. The
    // fast reader reads each batch before the next is published, so it never falls behind.
    for _ in 0..75 {
        publisher.send_text("flood 40 4096");
        for _ in 0..40 {
            assert_eq!(fast.read_frame().unwrap().payload.len(), 4096);
        }
    }
    // The slow one reads now: whole messages, then the close 1008, then nothing.
    let mut got = 0;
    loop {
        let frame = slow.read_frame().expect("frames, then the close");
        if frame.opcode == 0x8 {
            assert_eq!(frame.expect_close_code(), 1008);
            break;
        }
        assert_eq!(frame.payload, vec![0x5a; 4096]);
        got += 1;
    }
    slow.send_frame(true, 0x8, &1008u16.to_be_bytes());
    assert!(slow.closed_within(IO_TIMEOUT), "data after the close");
    let seen = seen.lock().unwrap();
    assert!(
        seen.max_buffered <= LIMIT,
        "backlog {} passed the limit",
        seen.max_buffered
    );
    assert!(got < 3000, "got {got}: never closed");
    assert_eq!(seen.published.closed, 1, "closed once, then skipped");
    assert_eq!(seen.published.delivered, 3000 + got);
}

/// Under the drop policy the slow subscriber stays open and misses what does not fit; what it
/// gets is in order, and it gets new messages once it has read.
#[test]
fn a_slow_subscriber_under_the_drop_policy_misses_messages_but_stays() {
    const LIMIT: usize = 64 * 1024;
    let (server, seen) = start(Config {
        max_subscriber_backlog: LIMIT,
        slow_subscriber: SlowSubscriber::Drop,
        ..Config::default()
    });
    let mut publisher = Client::ws(server.addr);
    let mut slow = Client::ws_small_buffers(server.addr, 4096, 4096);
    wait_members(&seen, 2);
    publisher.send_text("flood 3000 4096");
    let deadline = std::time::Instant::now() + IO_TIMEOUT;
    let counted = |seen: &Mutex<Seen>| {
        let published = seen.lock().unwrap().published;
        published.delivered + published.dropped
    };
    while counted(&seen) < 3000 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let published = seen.lock().unwrap().published;
    assert!(
        published.dropped > 0 && published.delivered < 3000,
        "{published:?}"
    );
    for _ in 0..published.delivered {
        assert_eq!(slow.read_frame().unwrap().payload.len(), 4096);
    }
    // Caught up: the next message arrives.
    publisher.send_text("after");
    assert_eq!(slow.read_frame().unwrap().payload, b"after");
    assert!(seen.lock().unwrap().max_buffered <= LIMIT);
}

#[test]
fn subscribe_unsubscribe_churn_and_members_closing_mid_publish() {
    let (server, seen) = start(Config::default());
    let mut a = Client::ws(server.addr);
    let mut b = Client::ws(server.addr);
    wait_members(&seen, 2);
    for _ in 0..200 {
        a.send_text("leave");
        a.send_text("join");
    }
    a.send_text("count");
    assert_eq!(a.read_frame().unwrap().payload, b"2 1");
    // Many members join, and half of them reset while a flood is published to them.
    let mut crowd: Vec<Client> = (0..50).map(|_| Client::ws(server.addr)).collect();
    wait_members(&seen, 52);
    b.send_text("flood 200 1024");
    for client in crowd.drain(..25) {
        client.reset();
    }
    for _ in 0..200 {
        assert_eq!(a.read_frame().unwrap().payload.len(), 1024);
    }
    for client in &mut crowd {
        for _ in 0..200 {
            assert_eq!(client.read_frame().unwrap().payload.len(), 1024);
        }
    }
    wait_members(&seen, 27);
    a.send_text("count");
    assert_eq!(a.read_frame().unwrap().payload, b"27 1");
}
