//! Keeps the webhook's [`IndexView`] current on every replica (a standby serves admissions
//! too): a watch of SociIndexes per watched namespace (or one over all), each object trimmed
//! to what the view reads, and the view rebuilt at most every [`REBUILD_EVERY`].

use super::admission::AdmissionState;
use super::view::IndexView;
use crate::api::SociIndex;
use futures_util::StreamExt;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

const REBUILD_EVERY: Duration = Duration::from_millis(250);

type Objects = HashMap<(String, String), SociIndex>;

/// Runs until the process ends. `namespaces` empty: every namespace.
pub async fn run(
    state: Arc<AdmissionState>,
    namespaces: Vec<String>,
    cluster_policy_indexes: bool,
) {
    let apis: Vec<Api<SociIndex>> = if namespaces.is_empty() {
        vec![Api::all(state.ctx.client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(state.ctx.client.clone(), ns))
            .collect()
    };
    let streams = apis.len();
    // One map per watch, replaced whole when its watch relists.
    let shared: Arc<std::sync::Mutex<Vec<Option<Objects>>>> =
        Arc::new(std::sync::Mutex::new(vec![None; streams]));
    let changed = Arc::new(Notify::new());
    for (slot, api) in apis.into_iter().enumerate() {
        tokio::spawn(watch(api, slot, shared.clone(), changed.clone()));
    }
    loop {
        changed.notified().await;
        tokio::time::sleep(REBUILD_EVERY).await;
        let view = {
            let maps = crate::locks::lock(&shared);
            if maps.iter().any(Option::is_none) {
                continue;
            }
            IndexView::build(
                maps.iter().flatten().flat_map(|m| m.values()),
                cluster_policy_indexes,
            )
        };
        state.set_view(view);
    }
}

async fn watch(
    api: Api<SociIndex>,
    slot: usize,
    shared: Arc<std::sync::Mutex<Vec<Option<Objects>>>>,
    changed: Arc<Notify>,
) {
    let mut relisting: Objects = HashMap::new();
    let mut events =
        std::pin::pin!(watcher::watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                tracing::warn!(error = %e, "admission: watching SociIndexes");
                continue;
            }
        };
        let mut maps = crate::locks::lock(&shared);
        match event {
            Event::Init => relisting.clear(),
            Event::InitApply(o) => {
                relisting.insert(key(&o), trim(o));
            }
            Event::InitDone => maps[slot] = Some(std::mem::take(&mut relisting)),
            Event::Apply(o) => {
                if let Some(map) = maps[slot].as_mut() {
                    map.insert(key(&o), trim(o));
                }
            }
            Event::Delete(o) => {
                if let Some(map) = maps[slot].as_mut() {
                    map.remove(&key(&o));
                }
            }
        }
        drop(maps);
        changed.notify_one();
    }
}

fn key(o: &SociIndex) -> (String, String) {
    (
        o.metadata.namespace.clone().unwrap_or_default(),
        o.metadata.name.clone().unwrap_or_default(),
    )
}

/// Only what [`IndexView::build`] reads stays: labels, the credentials, the images' status.
fn trim(mut o: SociIndex) -> SociIndex {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
    o.spec.images.clear();
    if let Some(status) = o.status.as_mut() {
        status.conditions.clear();
        for image in &mut status.images {
            image.platforms.clear();
        }
    }
    o
}
