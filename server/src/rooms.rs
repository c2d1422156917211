//! Rooms: a WebSocket opened on `/room/NAME` joins the topic `NAME`, and every message from a
//! member is published unchanged to every member, the sender included.
//!
//! Owns the path rule (which names are rooms) and the member counts the stats push shows.
//! Delivery is the library's topics ([`wsreactor::Conn::publish`], which reaches the members
//! on every reactor thread): this module never sends to a connection itself.
//!
//! With several reactor threads, each thread's handler has its own [`Rooms`] (who of its
//! connections is in which room: looked up per message, so never behind a lock) and all of
//! them share one [`RoomCounts`] (members per room, changed only on join and leave): the way
//! this server shares application state across threads.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use wsreactor::ConnId;

/// The path prefix of a room.
pub const ROOM_PREFIX: &str = "/room/";

/// Longest room name: short enough for a page's title, far below the library's topic limit.
pub const MAX_ROOM_NAME: usize = 64;

/// The room a request target names, if it is one: `/room/NAME` (query and fragment ignored),
/// NAME of 1 to [`MAX_ROOM_NAME`] letters, digits, `-`, `_` or `.`. Anything else is not a
/// room (so it is refused with 403 rather than mistaken for the echo).
pub fn room_name(target: &str) -> Option<Result<&str, ()>> {
    let end = target.find(['?', '#']).unwrap_or(target.len());
    let name = target[..end].strip_prefix(ROOM_PREFIX)?;
    let valid = !name.is_empty()
        && name.len() <= MAX_ROOM_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    Some(if valid { Ok(name) } else { Err(()) })
}

/// A hasher for [`ConnId`]s (two `u32`s): a multiply and a rotate per word.
#[derive(Debug, Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

/// Members per room, over every reactor thread: cloned into each thread's [`Rooms`].
#[derive(Debug, Clone, Default)]
pub struct RoomCounts(Arc<Mutex<HashMap<Box<str>, usize>>>);

impl RoomCounts {
    fn change(&self, f: impl FnOnce(&mut HashMap<Box<str>, usize>)) {
        // A panic elsewhere while the lock was held leaves counts that are still counts.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Up to `most` rooms with the most members (ties by name), for the stats push.
    pub fn largest(&self, most: usize) -> Vec<(Box<str>, usize)> {
        let mut rooms: Vec<(Box<str>, usize)> = Vec::new();
        self.change(|members| rooms.extend(members.iter().map(|(r, &n)| (r.clone(), n))));
        rooms.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        rooms.truncate(most);
        rooms
    }
}

/// Who of one thread's connections is in which room.
#[derive(Debug, Default)]
pub struct Rooms {
    /// Looked up for every message while any room exists: hashed with a multiply, not SipHash
    /// (ids are the server's own, not chosen by peers).
    member_of: HashMap<ConnId, Box<str>, BuildHasherDefault<IdHasher>>,
    members: RoomCounts,
}

impl Rooms {
    /// This thread's rooms, counting members in `counts` (shared with the other threads).
    pub fn counting_in(counts: RoomCounts) -> Self {
        Rooms {
            member_of: HashMap::default(),
            members: counts,
        }
    }

    /// `id` joined `room`.
    pub fn join(&mut self, id: ConnId, room: &str) {
        self.member_of.insert(id, room.into());
        self.members
            .change(|members| *members.entry(room.into()).or_default() += 1);
    }

    /// `id` left (it closed); nothing if it was in no room.
    pub fn leave(&mut self, id: ConnId) {
        let Some(room) = self.member_of.remove(&id) else {
            return;
        };
        self.members.change(|members| {
            if let Some(count) = members.get_mut(&room) {
                *count -= 1;
                if *count == 0 {
                    members.remove(&room);
                }
            }
        });
    }

    /// The room `id` is in.
    #[inline]
    pub fn room_of(&self, id: ConnId) -> Option<&str> {
        if self.member_of.is_empty() {
            return None;
        }
        self.member_of.get(&id).map(|r| &**r)
    }

    /// Up to `most` rooms with the most members on every thread (see [`RoomCounts::largest`]).
    pub fn largest(&self, most: usize) -> Vec<(Box<str>, usize)> {
        self.members.largest(most)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_short_plain_segments() {
        assert_eq!(room_name("/room/lobby"), Some(Ok("lobby")));
        assert_eq!(room_name("/room/a-b_c.1?x=1"), Some(Ok("a-b_c.1")));
        assert_eq!(room_name("/room/"), Some(Err(())));
        assert_eq!(room_name("/room/a/b"), Some(Err(())));
        assert_eq!(room_name("/room/%20"), Some(Err(())));
        assert_eq!(
            room_name(&format!("/room/{}", "x".repeat(65))),
            Some(Err(()))
        );
        assert_eq!(room_name("/stats"), None);
        assert_eq!(room_name("/"), None);
    }
}
