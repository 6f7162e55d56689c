//! Who may send a peer message: the authenticated caller (its certificate's name) must be the
//! node the message claims to come from.

use protobuf::{CodedInputStream, ProtobufResult};

use super::{Node, PeerPayload};
use crate::error::PeerMessageError;
use crate::members::NodeId;

/// Field number of `from` in raft-rs's `eraftpb.Message`.
const FROM_FIELD: u32 = 3;

impl PeerPayload {
    /// The snapshot file a snapshot message names (its [`SnapshotRef`]); `None` for any other
    /// message or bytes. A receiving shell uses it to check the file it is sent.
    pub fn snapshot_ref(bytes: &[u8]) -> Option<crate::snapshot_ref::SnapshotRef> {
        let m = <raft::eraftpb::Message as protobuf::Message>::parse_from_bytes(bytes).ok()?;
        if m.get_msg_type() != raft::eraftpb::MessageType::MsgSnapshot {
            return None;
        }
        crate::snapshot_ref::SnapshotRef::decode(&m.get_snapshot().data).ok()
    }

    /// The Raft id a peer message claims to come from (its `from`), read without decoding the
    /// rest: entries and snapshot data are skipped by their lengths, so the cost does not grow
    /// with the payload's bytes. `None` if the bytes are not a protobuf message. A shell uses it
    /// to refuse a stream at once; [`Node::handle_peer_message_from`] checks again on the
    /// decoded message.
    pub fn sender(bytes: &[u8]) -> Option<NodeId> {
        fn scan(bytes: &[u8]) -> ProtobufResult<NodeId> {
            let mut input = CodedInputStream::from_bytes(bytes);
            // proto3: absent means 0, and the last occurrence wins.
            let mut from = 0;
            while !input.eof()? {
                let (field, wire_type) = input.read_tag_unpack()?;
                if field == FROM_FIELD && wire_type == protobuf::wire_format::WireTypeVarint {
                    from = input.read_uint64()?;
                } else {
                    input.skip_field(wire_type)?;
                }
            }
            Ok(from)
        }
        scan(bytes).ok()
    }
}

impl Node {
    /// A message from a peer whose certificate names `caller` (a node certificate: the shell
    /// authenticated the connection), as produced by its [`crate::Transmit::payload`]: checked
    /// like [`Node::handle_peer_message`], and refused with
    /// [`PeerMessageError::ImpersonatedSender`] unless `caller` is the node the message
    /// claims to come from ([`crate::Directory::admits_sender`]). The shell must bound the
    /// message's size.
    pub fn handle_peer_message_from(
        &mut self,
        caller: &str,
        bytes: &[u8],
    ) -> Result<(), PeerMessageError> {
        self.handle_peer_message_checked(bytes, Some(caller))
    }

    /// [`crate::Directory::admits_sender`] on this node's directory; the member table alone
    /// answers for its members (every message of a running cluster), so the directory is
    /// built only for other ids.
    pub(super) fn admits_sender(&self, caller: &str, from: NodeId) -> bool {
        match self.sm.members().get(&from) {
            Some(m) => m.name == caller,
            None => self.directory().admits_sender(caller, from),
        }
    }
}

#[cfg(test)]
mod tests {
    use protobuf::Message as _;
    use raft::eraftpb::{Entry, Message, MessageType, Snapshot};

    use super::*;

    #[test]
    fn sender_is_read_past_entries_and_snapshot_data() {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = 1;
        m.from = 0x1234_5678_9abc;
        m.term = 7;
        m.entries = vec![Entry { data: vec![9; 300].into(), ..Entry::default() }].into();
        let mut snap = Snapshot::default();
        snap.data = vec![3; 1000].into();
        m.set_snapshot(snap);
        m.commit = 5;
        let bytes = m.write_to_bytes().unwrap();
        assert_eq!(PeerPayload::sender(&bytes), Some(0x1234_5678_9abc));
        assert_eq!(PeerPayload::sender(&Message::default().write_to_bytes().unwrap()), Some(0));
        assert_eq!(PeerPayload::sender(&bytes[..bytes.len() - 1]), None, "truncated");
        assert_eq!(PeerPayload::sender(&[0x17, 0xff, 0xff]), None);
    }
}
