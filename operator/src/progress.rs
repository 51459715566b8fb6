//! What a conversion tells the person waiting for it: bars on a terminal (bytes indexed of the
//! total, layers done, rate, time left; then blobs written), plain log lines otherwise (a
//! worker's log, CI, a pipe).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Clone)]
pub struct Progress(Arc<Mode>);

enum Mode {
    Lines,
    Bars(Bars),
}

struct Bars {
    multi: MultiProgress,
    indexing: ProgressBar,
    layers_total: AtomicUsize,
    layers_done: AtomicUsize,
    writing: std::sync::Mutex<Option<ProgressBar>>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match *self.0 {
            Mode::Lines => "Progress::Lines",
            Mode::Bars(_) => "Progress::Bars",
        })
    }
}

impl Progress {
    pub fn lines() -> Self {
        Self(Arc::new(Mode::Lines))
    }

    /// Bars when stderr is a terminal, else lines.
    pub fn for_stderr() -> Self {
        if std::io::stderr().is_terminal() {
            Self::bars(ProgressDrawTarget::stderr())
        } else {
            Self::lines()
        }
    }

    fn bars(target: ProgressDrawTarget) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let indexing = multi.add(ProgressBar::new(0));
        indexing.set_style(
            ProgressStyle::with_template(
                "indexing [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} {msg} (eta {eta})",
            )
            .expect("template")
            .progress_chars("=> "),
        );
        Self(Arc::new(Mode::Bars(Bars {
            multi,
            indexing,
            layers_total: AtomicUsize::new(0),
            layers_done: AtomicUsize::new(0),
            writing: std::sync::Mutex::new(None),
        })))
    }

    fn line(&self, text: String) {
        match &*self.0 {
            Mode::Lines => eprintln!("{text}"),
            // Above the bars, so it stays in the scroll-back.
            Mode::Bars(b) => {
                let _ = b.multi.println(text);
            }
        }
    }

    /// Indexing begins: `layers` layers of `bytes` compressed bytes in all.
    pub fn indexing(&self, layers: usize, bytes: u64) {
        if let Mode::Bars(b) = &*self.0 {
            b.layers_total.store(layers, Ordering::Relaxed);
            b.indexing.set_length(bytes);
            b.indexing.set_message(format!("layers 0/{layers}"));
        }
    }

    /// `n` more compressed bytes of some layer were read and indexed.
    pub fn indexed_bytes(&self, n: u64) {
        if let Mode::Bars(b) = &*self.0 {
            b.indexing.inc(n);
        }
    }

    pub fn layer_done(&self, layer: &str, ztoc: &str) {
        if let Mode::Bars(b) = &*self.0 {
            let done = b.layers_done.fetch_add(1, Ordering::Relaxed) + 1;
            let total = b.layers_total.load(Ordering::Relaxed);
            b.indexing.set_message(format!("layers {done}/{total}"));
        }
        self.line(format!("layer {layer} -> ztoc {ztoc}"));
    }

    /// Writing begins: `items` blobs and manifests.
    pub fn writing(&self, items: usize) {
        if let Mode::Bars(b) = &*self.0 {
            b.indexing.finish();
            let bar = b.multi.add(ProgressBar::new(items as u64));
            bar.set_style(
                ProgressStyle::with_template(
                    "writing  [{bar:30}] {pos}/{len} blobs and manifests, {msg}",
                )
                .expect("template")
                .progress_chars("=> "),
            );
            bar.set_message("0 B");
            *b.writing.lock().expect("lock") = Some(bar);
        }
    }

    /// One more blob or manifest written; `total_bytes` transferred so far.
    pub fn wrote(&self, total_bytes: u64) {
        if let Mode::Bars(b) = &*self.0
            && let Some(bar) = &*b.writing.lock().expect("lock")
        {
            bar.inc(1);
            bar.set_message(indicatif::HumanBytes(total_bytes).to_string());
        }
    }

    /// Clears the bars (the caller prints its summary next).
    pub fn finish(&self) {
        if let Mode::Bars(b) = &*self.0 {
            b.indexing.finish_and_clear();
            if let Some(bar) = b.writing.lock().expect("lock").take() {
                bar.finish_and_clear();
            }
            let _ = b.multi.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_count_layers_and_bytes() {
        let p = Progress::bars(ProgressDrawTarget::hidden());
        p.indexing(2, 300);
        p.indexed_bytes(100);
        p.layer_done("sha256:a", "sha256:z");
        let Mode::Bars(b) = &*p.0 else { panic!() };
        assert_eq!(b.indexing.position(), 100);
        assert_eq!(b.indexing.length(), Some(300));
        assert_eq!(b.indexing.message(), "layers 1/2");
        p.writing(3);
        p.wrote(10);
        p.wrote(10);
        let bar = b.writing.lock().unwrap().clone().unwrap();
        assert_eq!(bar.position(), 2);
        assert_eq!(bar.message(), "10 B");
        p.finish();
        assert!(b.writing.lock().unwrap().is_none());
    }
}
