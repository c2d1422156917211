//! Work handed to the reactor from other threads ([`ServerHandle::run`]) and sends to other
//! connections by id, over real sockets.

use std::net::TcpStream;
use std::sync::mpsc;
use std::time::Duration;

use tungstenite::{Message as WsMessage, WebSocket};
use wsreactor::{Config, Conn, ConnId, Handler, Message, Request, SendStatus, Server};

/// Reports each opened connection's id to the test; echoes nothing.
struct Ids(mpsc::Sender<ConnId>);

impl Handler for Ids {
    fn on_open(&mut self, conn: &mut Conn<'_>, _request: &Request<'_>) {
        let _ = self.0.send(conn.id());
    }
    fn on_message(&mut self, _conn: &mut Conn<'_>, _message: Message<'_>) {}
}

fn client(addr: std::net::SocketAddr) -> WebSocket<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    tungstenite::client(format!("ws://{addr}/"), stream)
        .unwrap()
        .0
}

#[test]
fn work_from_another_thread_reaches_connections_and_stale_ids_are_closed() {
    let (ids_tx, ids) = mpsc::channel();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        // The backend this run of the suite tests (tests/common's `IO_URING_ENV`).
        io_uring: std::env::var_os("WSREACTOR_IO_URING").is_some_and(|v| v == "1"),
        ..Config::default()
    };
    let mut server = Server::bind(config, Ids(ids_tx)).unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let shutdown = server.shutdown_handle();
    let reactor = std::thread::spawn(move || server.run().unwrap());

    let mut first = client(addr);
    let first_id = ids.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut second = client(addr);
    let second_id = ids.recv_timeout(Duration::from_secs(5)).unwrap();

    // From this thread: a push to one connection, and a count of the open ones.
    let (status_tx, status) = mpsc::channel();
    handle
        .run(move |_handler, ctx| {
            let sent = ctx.send(first_id, Message::Text("pushed from outside"));
            let _ = status_tx.send((sent, ctx.open_count()));
        })
        .unwrap();
    let (sent, open) = status.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!((sent, open), (SendStatus::Sent, 2));
    assert_eq!(
        first.read().unwrap(),
        WsMessage::text("pushed from outside")
    );

    // Both at once, then a stale id once the second has gone.
    let fanout = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = fanout.clone();
    handle
        .run(move |_h, ctx| {
            let sent = ctx.send_many([first_id, second_id], Message::Binary(b"to all"));
            *seen.lock().unwrap() = Some(sent);
        })
        .unwrap();
    assert_eq!(first.read().unwrap(), WsMessage::binary(&b"to all"[..]));
    assert_eq!(second.read().unwrap(), WsMessage::binary(&b"to all"[..]));
    assert_eq!(fanout.lock().unwrap().map(|f| f.sent), Some(2));

    second.close(None).unwrap();
    while second.read().is_ok() {}
    let (stale_tx, stale) = mpsc::channel();
    // The close may take a loop turn to be processed: ask until the id is stale.
    let mut answer = SendStatus::Sent;
    for _ in 0..50 {
        let tx = stale_tx.clone();
        handle
            .run(move |_h, ctx| {
                let _ = tx.send(ctx.send(second_id, Message::Text("too late")));
            })
            .unwrap();
        answer = stale.recv_timeout(Duration::from_secs(5)).unwrap();
        if answer == SendStatus::Closed {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(answer, SendStatus::Closed);

    shutdown.shutdown();
    while first.read().is_ok() {} // answers the server's close 1001
    reactor.join().unwrap();
    // The reactor is gone: work can no longer be handed in.
    assert!(handle.run(|_h, _ctx| {}).is_err());
}
