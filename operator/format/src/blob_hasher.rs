//! Hashing of a layer's compressed bytes: the sha256 of every span and, on request, of the whole
//! blob. Hashing costs about a quarter of a gzip layer's build time on one core, so it runs on
//! other threads while the caller's thread inflates: one for the spans and, when asked for, one
//! for the whole blob (two sequential hashes; on one thread they would fall behind inflate on
//! poorly compressible data). Bytes travel in a small pool of recycled buffers, shared by the
//! workers, so memory stays flat whatever the layer size. Each message carries the span cuts that
//! inflating its bytes revealed; a cut always arrives no later than the bytes it falls in.

use crate::zinfo::{Checkpoint, SpanDigester, TarSpanHasher};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

/// Bytes per buffer handed to the workers.
pub(crate) const CHUNK: usize = 256 * 1024;
/// Buffers in existence at most (2 MiB): enough to ride out stretches of incompressible data,
/// where hashing is slower than inflating, without growing with the layer.
const POOL: usize = 8;

/// Where spans end.
pub(crate) enum SpanCuts {
    /// At the announced gzip checkpoints.
    Checkpoints(SpanDigester),
    /// Every `span_size` bytes (uncompressed tar).
    Fixed(TarSpanHasher),
}

pub(crate) struct Hashes {
    pub span_digests: Vec<[u8; 32]>,
    pub blob_digest: Option<[u8; 32]>,
}

/// One sequential hash over the stream, wherever it runs.
enum Job {
    Spans(SpanCuts),
    Blob(Box<Sha256>),
}

enum Output {
    Spans(Vec<[u8; 32]>),
    Blob([u8; 32]),
}

impl Job {
    fn cut(&mut self, checkpoint: Checkpoint) {
        if let Job::Spans(SpanCuts::Checkpoints(d)) = self {
            d.cut(checkpoint);
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Job::Spans(SpanCuts::Checkpoints(d)) => d.update(data),
            Job::Spans(SpanCuts::Fixed(h)) => h.push(data),
            Job::Blob(h) => h.update(data),
        }
    }

    fn finish(self) -> Output {
        match self {
            Job::Spans(SpanCuts::Checkpoints(d)) => Output::Spans(d.finish()),
            Job::Spans(SpanCuts::Fixed(h)) => Output::Spans(h.finish().0),
            Job::Blob(h) => Output::Blob(h.finalize().into()),
        }
    }
}

enum Message {
    /// The first message: the state to continue from.
    Start(Box<Job>),
    /// Cuts first (they may lie inside `data` or later), then the bytes.
    Data {
        data: Arc<Vec<u8>>,
        cuts: Vec<Checkpoint>,
    },
}

struct Worker {
    inbox: Option<SyncSender<Message>>,
    handle: Option<JoinHandle<Option<Output>>>,
}

impl Worker {
    fn spawn(give_back: Sender<Vec<u8>>) -> std::io::Result<Self> {
        let (inbox, messages) = sync_channel::<Message>(POOL);
        let handle = std::thread::Builder::new()
            .name("soci-hash".into())
            .spawn(move || {
                let Ok(Message::Start(job)) = messages.recv() else {
                    return None;
                };
                let mut job = *job;
                for message in messages {
                    if let Message::Data { data, cuts } = message {
                        for cut in cuts {
                            job.cut(cut);
                        }
                        job.update(&data);
                        // The last worker done with a buffer returns it to the pool (if the
                        // indexer is gone already, it is simply freed).
                        if let Some(buffer) = Arc::into_inner(data) {
                            let _ = give_back.send(buffer);
                        }
                    }
                }
                Some(job.finish())
            })?;
        Ok(Self {
            inbox: Some(inbox),
            handle: Some(handle),
        })
    }

    /// False when the worker is gone (only a panic does that).
    fn send(&self, message: Message) -> bool {
        self.inbox
            .as_ref()
            .is_some_and(|tx| tx.send(message).is_ok())
    }

    fn join(&mut self) -> std::thread::Result<Option<Output>> {
        self.inbox = None;
        self.handle.take().map_or(Ok(None), JoinHandle::join)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Hang up, then wait: the worker ends as soon as it sees the channel closed.
        let _ = self.join();
    }
}

struct Threads {
    workers: Vec<Worker>,
    /// Buffers all workers are done with.
    free: Receiver<Vec<u8>>,
    allocated: usize,
}

impl Threads {
    /// One worker per job, or none at all.
    fn start(jobs: Vec<Job>) -> Result<Self, Vec<Job>> {
        let (give_back, free) = channel();
        let mut workers = Vec::new();
        for _ in &jobs {
            match Worker::spawn(give_back.clone()) {
                Ok(w) => workers.push(w),
                Err(_) => return Err(jobs), // dropping `workers` stops the ones started
            }
        }
        let mut threads = Self {
            workers,
            free,
            allocated: 0,
        };
        for (i, job) in jobs.into_iter().enumerate() {
            if !threads.workers[i].send(Message::Start(Box::new(job))) {
                threads.died();
            }
        }
        Ok(threads)
    }

    fn send(&mut self, data: Vec<u8>, cuts: Vec<Checkpoint>) {
        // Keep no reference here: the last worker done must see the only one, or the buffer
        // would not come back to the pool.
        let mut data = Some(Arc::new(data));
        for i in 0..self.workers.len() {
            let shared = if i + 1 == self.workers.len() {
                data.take()
            } else {
                data.clone()
            };
            let message = Message::Data {
                data: shared.expect("taken only for the last worker"),
                cuts: cuts.clone(),
            };
            if !self.workers[i].send(message) {
                self.died();
            }
        }
    }

    /// An empty buffer of `CHUNK` capacity; waits for the workers when all are in use.
    fn buffer(&mut self) -> Vec<u8> {
        let reused = match self.free.try_recv() {
            Ok(b) => Some(b),
            Err(_) if self.allocated < POOL => None,
            Err(_) => match self.free.recv() {
                Ok(b) => Some(b),
                Err(_) => self.died(),
            },
        };
        match reused {
            Some(mut b) => {
                b.clear();
                b
            }
            None => {
                self.allocated += 1;
                Vec::with_capacity(CHUNK)
            }
        }
    }

    fn finish(mut self) -> Vec<Output> {
        let mut outputs = Vec::new();
        for i in 0..self.workers.len() {
            match self.workers[i].join() {
                Ok(Some(output)) => outputs.push(output),
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(None) => unreachable!("every worker got its job before any data"),
            }
        }
        outputs
    }

    /// A worker hung up early: only a panic does that; re-raise it here.
    fn died(&mut self) -> ! {
        for worker in &mut self.workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
        panic!("hasher thread stopped early");
    }
}

/// Hashes compressed bytes as they are pushed: on worker threads (started when the first buffer
/// fills, so tiny layers never start any), or inline.
pub(crate) struct BlobHasher {
    /// The jobs while they run on this thread; empty once they moved to the workers.
    local: Vec<Job>,
    threads: Option<Threads>,
    background: bool,
    /// Bytes not yet handed over (background mode only).
    chunk: Vec<u8>,
    /// Cuts not yet handed over (workers running only).
    cuts: Vec<Checkpoint>,
}

impl BlobHasher {
    pub fn new(spans: SpanCuts, blob_digest: bool, background: bool) -> Self {
        let mut local = vec![Job::Spans(spans)];
        if blob_digest {
            local.push(Job::Blob(Box::default()));
        }
        Self {
            local,
            threads: None,
            background,
            chunk: Vec::new(),
            cuts: Vec::new(),
        }
    }

    /// The next span starts at `checkpoint`, which is not before any byte already passed in.
    pub fn cut(&mut self, checkpoint: Checkpoint) {
        if self.threads.is_some() {
            self.cuts.push(checkpoint);
        } else {
            for job in &mut self.local {
                job.cut(checkpoint);
            }
        }
    }

    /// The next compressed bytes; every cut inside them must have been announced already.
    pub fn update(&mut self, mut data: &[u8]) {
        if !self.background {
            for job in &mut self.local {
                job.update(data);
            }
            return;
        }
        while !data.is_empty() {
            if self.chunk.capacity() == 0 {
                self.chunk = match &mut self.threads {
                    Some(threads) => threads.buffer(),
                    None => Vec::with_capacity(CHUNK),
                };
            }
            let take = (CHUNK - self.chunk.len()).min(data.len());
            self.chunk.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.chunk.len() == CHUNK {
                self.hand_over();
            }
        }
    }

    fn hand_over(&mut self) {
        if self.threads.is_none() {
            match Threads::start(std::mem::take(&mut self.local)) {
                Ok(mut threads) => {
                    threads.allocated = 1; // the buffer being handed over
                    self.threads = Some(threads);
                }
                Err(jobs) => {
                    // No threads to be had: hash here, as if asked to.
                    self.local = jobs;
                    self.background = false;
                    let chunk = std::mem::take(&mut self.chunk);
                    self.update(&chunk);
                    return;
                }
            }
        }
        if let Some(threads) = &mut self.threads {
            let data = std::mem::take(&mut self.chunk);
            let cuts = std::mem::take(&mut self.cuts);
            threads.send(data, cuts);
        }
    }

    pub fn finish(mut self) -> Hashes {
        let outputs = match self.threads.take() {
            None => {
                let chunk = std::mem::take(&mut self.chunk);
                let mut jobs = std::mem::take(&mut self.local);
                for job in &mut jobs {
                    job.update(&chunk);
                }
                jobs.into_iter().map(Job::finish).collect()
            }
            Some(mut threads) => {
                if !self.chunk.is_empty() || !self.cuts.is_empty() {
                    let data = std::mem::take(&mut self.chunk);
                    let cuts = std::mem::take(&mut self.cuts);
                    threads.send(data, cuts);
                }
                threads.finish()
            }
        };
        let mut hashes = Hashes {
            span_digests: Vec::new(),
            blob_digest: None,
        };
        for output in outputs {
            match output {
                Output::Spans(d) => hashes.span_digests = d,
                Output::Blob(d) => hashes.blob_digest = Some(d),
            }
        }
        hashes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 1000) as u8).collect()
    }

    fn cuts(len: usize) -> Vec<Checkpoint> {
        // Uneven spans, some with a shared first byte, one cut at a buffer edge, one at the end.
        [10usize, 4000, 4001, CHUNK, CHUNK + 77, 3 * CHUNK + 5, len]
            .iter()
            .enumerate()
            .map(|(i, &o)| Checkpoint {
                compressed_offset: o as u64,
                uncompressed_offset: i as u64,
                bits: (i % 3) as u8,
            })
            .collect()
    }

    fn expected(data: &[u8], cuts: &[Checkpoint]) -> Vec<[u8; 32]> {
        cuts.iter()
            .enumerate()
            .map(|(i, c)| {
                let start = c.compressed_offset as usize - usize::from(c.bits != 0);
                let end = cuts
                    .get(i + 1)
                    .map_or(data.len(), |n| n.compressed_offset as usize);
                Sha256::digest(&data[start..end]).into()
            })
            .collect()
    }

    /// Feeds `data` in `piece`-sized pushes, announcing each cut just before the push it lies
    /// in (or, when it lies at a push's start, with the push before), as the indexer does.
    fn run(data: &[u8], cuts: &[Checkpoint], piece: usize, background: bool) -> Hashes {
        let mut h = BlobHasher::new(SpanCuts::Checkpoints(SpanDigester::new()), true, background);
        let mut next = 0;
        for (i, p) in data.chunks(piece).enumerate() {
            let end = (i * piece + p.len()) as u64;
            while next < cuts.len() && cuts[next].compressed_offset <= end {
                h.cut(cuts[next]);
                next += 1;
            }
            h.update(p);
        }
        h.finish()
    }

    #[test]
    fn spans_and_blob_digest_match_inline_and_background_in_any_chunking() {
        // More than the pool holds, so buffers must come back to it.
        let data = sample(3 * POOL * CHUNK + 123);
        let cuts = cuts(data.len());
        let want = expected(&data, &cuts);
        let whole: [u8; 32] = Sha256::digest(&data).into();
        for background in [false, true] {
            for piece in [1000, 4001, CHUNK, CHUNK + 1, 3 << 20] {
                let got = run(&data, &cuts, piece, background);
                assert!(got.span_digests == want, "piece {piece} bg {background}");
                assert_eq!(got.blob_digest, Some(whole));
            }
        }
    }

    #[test]
    fn fixed_spans_on_the_worker() {
        let data = sample(2 * CHUNK + 3);
        let mut h = BlobHasher::new(SpanCuts::Fixed(TarSpanHasher::new(100_000)), false, true);
        for p in data.chunks(70_000) {
            h.update(p);
        }
        let got = h.finish();
        assert!(got.blob_digest.is_none());
        assert_eq!(got.span_digests.len(), data.len().div_ceil(100_000));
        let last: [u8; 32] = Sha256::digest(&data[500_000..]).into();
        assert_eq!(got.span_digests[5], last);
    }

    #[test]
    fn dropping_midway_stops_the_worker() {
        let mut h = BlobHasher::new(SpanCuts::Checkpoints(SpanDigester::new()), true, true);
        h.update(&sample(3 * CHUNK));
        assert_eq!(h.threads.as_ref().map(|t| t.workers.len()), Some(2));
        drop(h); // must not hang
    }
}
