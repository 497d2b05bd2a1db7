//! The UIDL memory in whole sessions, on a store of the test's own: the
//! session needs nothing of the embedded backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use popgate::state::{MailboxKey, Memory, StateError, StateStore};

use super::{body, config, Gateway, Peer};

/// A store in a map; `broken` makes every call fail.
#[derive(Default)]
struct MapStore {
    map: Mutex<HashMap<MailboxKey, Memory>>,
    broken: Mutex<bool>,
}

#[async_trait]
impl StateStore for MapStore {
    async fn load(&self, mailbox: &MailboxKey) -> Result<Option<Memory>, StateError> {
        if *self.broken.lock().unwrap() {
            return Err(StateError::Backend("broken".into()));
        }
        Ok(self.map.lock().unwrap().get(mailbox).cloned())
    }

    async fn save(&self, mailbox: &MailboxKey, memory: &Memory) -> Result<(), StateError> {
        if *self.broken.lock().unwrap() {
            return Err(StateError::Backend("broken".into()));
        }
        self.map
            .lock()
            .unwrap()
            .insert(mailbox.clone(), memory.clone());
        Ok(())
    }

    async fn forget(&self, mailbox: &MailboxKey) -> Result<bool, StateError> {
        if *self.broken.lock().unwrap() {
            return Err(StateError::Backend("broken".into()));
        }
        Ok(self.map.lock().unwrap().remove(mailbox).is_some())
    }
}

/// UIDL -> the message's body, from one session.
async fn uidls(gw: &Gateway) -> HashMap<String, Vec<u8>> {
    let (_session, mut pop) = gw.another().await;
    pop.login().await;
    assert!(pop.cmd("UIDL").await.starts_with("+OK"));
    let mut out = HashMap::new();
    for line in pop.multi().await {
        let (n, uidl) = line.split_once(' ').unwrap();
        pop.send(&format!("RETR {n}")).await;
        assert!(pop.line().await.starts_with("+OK"));
        out.insert(uidl.to_string(), pop.body().await);
    }
    pop.cmd("QUIT").await;
    out
}

fn header_fetches(peer: &Peer) -> usize {
    let st = peer.0.lock().unwrap();
    st.log
        .iter()
        .filter(|c| c.contains("HEADER.FIELDS"))
        .count()
}

#[tokio::test]
async fn a_renumbered_mailbox_keeps_its_uidls_and_is_fingerprinted_once() {
    let peer = Peer::with_messages(4);
    peer.add(5, body(1, 3)); // an identical copy of message 1
    let store = Arc::new(MapStore::default());
    let s = store.clone();
    let (gw, _) = Gateway::adjusted(peer.clone(), config(""), |ctx| ctx.set_state_store(s)).await;
    let first = uidls(&gw).await;
    assert_eq!(first.len(), 5);
    assert_eq!(header_fetches(&peer), 1);
    assert_eq!(uidls(&gw).await, first);
    assert_eq!(
        header_fetches(&peer),
        1,
        "known messages are not fetched again"
    );

    // New UIDVALIDITY, every UID changed, in another order; one new message.
    {
        let mut st = peer.0.lock().unwrap();
        st.uid_validity_change = 7;
        st.messages.reverse();
        for (i, m) in st.messages.iter_mut().enumerate() {
            m.uid = 100 + i as u32;
        }
    }
    peer.add(200, body(9, 3));
    let again = uidls(&gw).await;
    assert_eq!(again.len(), 6);
    let kept: Vec<_> = first
        .iter()
        .filter(|(u, b)| again.get(*u) == Some(b))
        .collect();
    assert_eq!(
        kept.len(),
        5,
        "every message kept its UIDL with its content"
    );
    let new: Vec<_> = again.keys().filter(|u| !first.contains_key(*u)).collect();
    assert_eq!(new, vec!["000000c800000031"]);
}

#[tokio::test]
async fn a_failing_store_gives_template_uidls() {
    let peer = Peer::with_messages(2);
    let store = Arc::new(MapStore::default());
    *store.broken.lock().unwrap() = true;
    let s = store.clone();
    let (gw, _) = Gateway::adjusted(peer.clone(), config(""), |ctx| ctx.set_state_store(s)).await;
    let got = uidls(&gw).await;
    let mut keys: Vec<_> = got.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["000000010000002a", "000000020000002a"]);
}
