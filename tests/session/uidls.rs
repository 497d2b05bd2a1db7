//! The UIDL memory in whole sessions, on a store of the test's own: the
//! session needs nothing of the embedded backend.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use popgate::config::OnUnavailable;
use popgate::state::{MailboxKey, Memory, Saved, StateError, StateStore, Stored};

use super::{body, config, Gateway, Peer, PASSWORD, USER};

/// A store in a map of encoded records, with the backends' compare-and-set;
/// `broken` makes every call fail, `unwritable` every save, and
/// `meanwhile` is written over the record just before the next save, as
/// another instance would.
#[derive(Default)]
pub(crate) struct MapStore {
    map: Mutex<HashMap<MailboxKey, Vec<u8>>>,
    broken: Mutex<bool>,
    pub(crate) unwritable: Mutex<bool>,
    pub(crate) meanwhile: Mutex<Option<Memory>>,
    /// Saves that reached the map.
    saves: Mutex<usize>,
}

impl MapStore {
    fn check(&self) -> Result<(), StateError> {
        match *self.broken.lock().unwrap() {
            true => Err(StateError::Backend("broken".into())),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl StateStore for MapStore {
    async fn load(&self, mailbox: &MailboxKey) -> Result<Option<Stored>, StateError> {
        self.check()?;
        let map = self.map.lock().unwrap();
        map.get(mailbox).map(|b| Stored::decode(b)).transpose()
    }

    async fn save(
        &self,
        mailbox: &MailboxKey,
        memory: &Memory,
        expected: Option<&Stored>,
    ) -> Result<Saved, StateError> {
        self.check()?;
        if *self.unwritable.lock().unwrap() {
            return Err(StateError::Backend("read-only".into()));
        }
        let mut map = self.map.lock().unwrap();
        if let Some(other) = self.meanwhile.lock().unwrap().take() {
            map.insert(mailbox.clone(), other.encode());
        }
        let current = map.get(mailbox).map(|b| Stored::decode(b).unwrap().stamp);
        if current != expected.map(|s| s.stamp.clone()) {
            return Ok(Saved::Conflict);
        }
        map.insert(mailbox.clone(), memory.encode());
        *self.saves.lock().unwrap() += 1;
        Ok(Saved::Done)
    }

    async fn forget(&self, mailbox: &MailboxKey) -> Result<bool, StateError> {
        self.check()?;
        Ok(self.map.lock().unwrap().remove(mailbox).is_some())
    }

    async fn ping(&self) -> Result<(), StateError> {
        self.check()
    }
}

async fn gateway(peer: &Peer, store: &Arc<MapStore>, on_unavailable: OnUnavailable) -> Gateway {
    let s = store.clone();
    let (gw, _) = Gateway::adjusted(peer.clone(), config(""), move |ctx| {
        ctx.set_state_store(s, on_unavailable)
    })
    .await;
    gw
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

/// A new UIDVALIDITY, every UID moved up by ten: a reset mailbox.
fn renumber(peer: &Peer) {
    let mut st = peer.0.lock().unwrap();
    st.uid_validity_change = 1;
    for m in st.messages.iter_mut() {
        m.uid += 10;
    }
}

/// A reset mailbox: UIDVALIDITY moved on by `change`, the messages (in
/// reverse order with `reverse`) numbered anew from `first`.
fn reset(peer: &Peer, change: u32, reverse: bool, first: u32) {
    let mut st = peer.0.lock().unwrap();
    st.uid_validity_change = change;
    if reverse {
        st.messages.reverse();
    }
    for (i, m) in st.messages.iter_mut().enumerate() {
        m.uid = first + i as u32;
    }
}

/// The answer to PASS in a new session.
async fn pass_answer(gw: &Gateway) -> String {
    let (_session, mut pop) = gw.another().await;
    pop.send(&format!("USER {USER}")).await;
    assert!(pop.line().await.starts_with("+OK"));
    pop.send(&format!("PASS {PASSWORD}")).await;
    pop.line().await
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
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
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
    reset(&peer, 7, true, 100);
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

    let m = &gw.ctx.metrics;
    let event = |e: &str| m.uidl_events.with_label_values(&[e]).get();
    assert_eq!((event("first_contact"), event("rematch")), (1, 1));
    let rematched = |r: &str| m.uidl_rematched.with_label_values(&[r]).get();
    assert_eq!((rematched("matched"), rematched("unmatched")), (5, 1));
}

#[tokio::test]
async fn a_reset_that_hands_old_uids_to_other_messages_keeps_each_uidl_with_its_message() {
    let peer = Peer::with_messages(3);
    let store = Arc::new(MapStore::default());
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    let first = uidls(&gw).await;
    reset(&peer, 1, true, 1);
    assert_eq!(uidls(&gw).await, first);
}

#[tokio::test]
async fn a_mailbox_that_grew_has_only_its_new_messages_fingerprinted() {
    let peer = Peer::with_messages(3);
    let store = Arc::new(MapStore::default());
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    uidls(&gw).await;
    peer.add(4, body(4, 3));
    uidls(&gw).await;
    let log = peer.log();
    let fetches: Vec<_> = log.iter().filter(|c| c.contains("HEADER.FIELDS")).collect();
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    assert!(fetches[0].contains("UID FETCH 1:3 "), "{}", fetches[0]);
    assert!(fetches[1].contains("UID FETCH 4 "), "{}", fetches[1]);
}

#[tokio::test]
async fn a_login_to_an_unchanged_mailbox_writes_nothing() {
    let peer = Peer::with_messages(3);
    let store = Arc::new(MapStore::default());
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    let first = uidls(&gw).await;
    assert_eq!(*store.saves.lock().unwrap(), 1);
    assert_eq!(uidls(&gw).await, first);
    assert_eq!(*store.saves.lock().unwrap(), 1, "nothing new to remember");
    peer.add(4, body(4, 3));
    uidls(&gw).await;
    assert_eq!(*store.saves.lock().unwrap(), 2);
    let rematches = gw.ctx.metrics.uidl_events.with_label_values(&["rematch"]);
    assert_eq!(rematches.get(), 0, "a new message is no UIDVALIDITY change");
}

#[tokio::test]
async fn a_message_that_came_between_logins_keeps_its_uidl_through_a_reset() {
    let peer = Peer::with_messages(2);
    let store = Arc::new(MapStore::default());
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    assert_eq!(uidls(&gw).await.len(), 2);
    peer.add(3, body(3, 3));
    let before = uidls(&gw).await;
    assert_eq!(before.len(), 3);

    renumber(&peer);
    assert_eq!(
        uidls(&gw).await,
        before,
        "the memory knew the third message"
    );
}

#[tokio::test]
async fn a_message_replaced_by_one_of_the_same_size_is_remembered_too() {
    let peer = Peer::with_messages(2);
    let store = Arc::new(MapStore::default());
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    assert_eq!(uidls(&gw).await.len(), 2);
    {
        let mut st = peer.0.lock().unwrap();
        st.messages.retain(|m| m.uid != 2);
    }
    let (gone, three) = (body(2, 3), body(3, 3));
    assert_eq!(gone.len(), three.len());
    peer.add(3, three);
    let before = uidls(&gw).await;
    renumber(&peer);
    assert_eq!(uidls(&gw).await, before);
}

#[tokio::test]
async fn a_failing_store_gives_template_uidls_when_told_to_serve() {
    let peer = Peer::with_messages(2);
    let store = Arc::new(MapStore::default());
    *store.broken.lock().unwrap() = true;
    let gw = gateway(&peer, &store, OnUnavailable::Serve).await;
    let got = uidls(&gw).await;
    let mut keys: Vec<_> = got.keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, vec!["000000010000002a", "000000020000002a"]);
}

#[tokio::test]
async fn a_failing_store_refuses_the_login_by_default() {
    let peer = Peer::with_messages(2);
    let store = Arc::new(MapStore::default());
    *store.broken.lock().unwrap() = true;
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    assert_eq!(
        pass_answer(&gw).await,
        "-ERR [SYS/TEMP] Mailbox state unavailable, try again later."
    );
    // The store recovers: the next login is served, without a restart.
    *store.broken.lock().unwrap() = false;
    assert_eq!(uidls(&gw).await.len(), 2);
}

#[tokio::test]
async fn a_save_lost_to_another_instance_adopts_what_that_one_stored() {
    let peer = Peer::with_messages(3);
    let store = Arc::new(MapStore::default());
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    let first = uidls(&gw).await;

    // A UIDVALIDITY change; another instance re-matches first and stores
    // its own assignment, in which message 2 got an exception UIDL.
    reset(&peer, 7, false, 50);
    let key = MailboxKey {
        route: "default".into(),
        user: USER.into(),
        folder: "INBOX".into(),
    };
    let mut theirs = store.load(&key).await.unwrap().unwrap().memory;
    theirs.uid_validity = 49;
    for (i, p) in theirs.prints.iter_mut().enumerate() {
        p.uid = 50 + i as u32;
    }
    theirs.exceptions = [(51, "chosen-elsewhere".to_string())].into();
    *store.meanwhile.lock().unwrap() = Some(theirs.clone());

    let again = uidls(&gw).await;
    assert!(
        again.contains_key("chosen-elsewhere"),
        "the other instance's assignment is served: {:?}",
        again.keys().collect::<Vec<_>>()
    );
    assert_eq!(again.len(), first.len());
    assert_eq!(store.load(&key).await.unwrap().unwrap().memory, theirs);
}

#[tokio::test]
async fn a_refused_header_fetch_gives_template_uidls_and_a_lost_link_no_login() {
    let peer = Peer::with_messages(2);
    peer.refuse("HEADER.FIELDS", "NO [SERVERBUG] no headers today");
    let store = Arc::new(MapStore::default());
    let gw = gateway(&peer, &store, OnUnavailable::Refuse).await;
    let mut keys: Vec<_> = uidls(&gw).await.into_keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["000000010000002a", "000000020000002a"]);
    assert!(store.map.lock().unwrap().is_empty(), "nothing remembered");

    peer.set(|b| b.drop_at = Some("HEADER.FIELDS".into()));
    assert_eq!(
        pass_answer(&gw).await,
        "-ERR [SYS/TEMP] Mail server unavailable, try again later."
    );
    assert!(store.map.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_login_on_behalf_of_a_user_remembers_the_users_mailbox() {
    use base64::Engine;
    let store = Arc::new(MapStore::default());
    let s = store.clone();
    let cfg = config("auth:\n  client_master_login: true\n");
    let (_gw, mut pop) = Gateway::adjusted(Peer::with_messages(1), cfg, move |ctx| {
        ctx.set_state_store(s, OnUnavailable::Refuse)
    })
    .await;
    let plain = format!("{USER}\0{}\0{}", super::MASTER, super::MASTER_PASSWORD);
    let plain = base64::engine::general_purpose::STANDARD.encode(plain);
    assert_eq!(
        pop.cmd(&format!("AUTH PLAIN {plain}")).await,
        "+OK Logged in."
    );
    let users: Vec<String> = store
        .map
        .lock()
        .unwrap()
        .keys()
        .map(|k| k.user.clone())
        .collect();
    assert_eq!(users, [USER]);
}
