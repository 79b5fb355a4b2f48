//! A fixed pool of frame buffers between a producer thread (decoding images, reading a GStreamer
//! pipe) and the control loop. Every buffer is allocated when the pool is made; handing a frame over
//! copies bytes under a mutex and allocates nothing, so the loop's tick stays allocation-free.
//!
//! Two pacing rules: a *file* pool makes the producer wait while the pool is full (every frame is
//! delivered, in order); a *live* pool drops the oldest frame instead and counts it (a camera does
//! not wait for a slow tick, and nothing queues without bound).

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

struct State {
    slots: Vec<Vec<u8>>,
    index: Vec<u32>,
    /// The producer could not make this frame (an image that does not decode): the consumer gets
    /// [`Take::Failed`] for it, so that the loop counts it.
    failed: Vec<bool>,
    head: usize,
    len: usize,
    dropped: u64,
    /// The producer has finished (end of file, or given up).
    ended: bool,
    /// The producer is between attempts (a camera that failed and is being retried).
    down: bool,
    restarts: u64,
}

/// The shared pool. Cloning gives another handle to the same pool.
#[derive(Clone)]
pub struct FramePool {
    inner: Arc<(Mutex<State>, Condvar)>,
    frame_len: usize,
    live: bool,
}

/// What the consumer got.
#[derive(Debug, PartialEq, Eq)]
pub enum Take {
    Frame(u32),
    /// The producer could not make frame `index`.
    Failed(u32),
    /// Nothing arrived within the wait (the producer is slow or down).
    Nothing {
        down: bool,
    },
    Ended,
}

/// Counters of a pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub dropped: u64,
    pub restarts: u64,
}

impl FramePool {
    pub fn new(frame_len: usize, slots: usize, live: bool) -> FramePool {
        let slots = slots.max(1);
        let state = State {
            slots: (0..slots).map(|_| vec![0; frame_len]).collect(),
            index: vec![0; slots],
            failed: vec![false; slots],
            head: 0,
            len: 0,
            dropped: 0,
            ended: false,
            down: false,
            restarts: 0,
        };
        FramePool { inner: Arc::new((Mutex::new(state), Condvar::new())), frame_len, live }
    }

    pub fn frame_len(&self) -> usize {
        self.frame_len
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Producer: hand over frame `index` (`frame` must be `frame_len` bytes). A file pool waits while
    /// full; a live pool drops the oldest. Returns false when the consumer has gone (pool closed).
    pub fn push(&self, index: u32, frame: &[u8]) -> bool {
        self.push_slot(index, Some(frame))
    }

    /// Producer: frame `index` could not be made; the consumer is told, in order.
    pub fn push_failed(&self, index: u32) -> bool {
        self.push_slot(index, None)
    }

    fn push_slot(&self, index: u32, frame: Option<&[u8]>) -> bool {
        let (_, cv) = &*self.inner;
        let mut s = self.lock();
        let cap = s.slots.len();
        while s.len == cap {
            if s.ended {
                return false;
            }
            if self.live {
                s.head = (s.head + 1) % cap;
                s.len -= 1;
                s.dropped += 1;
                break;
            }
            s = cv.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.ended {
            return false;
        }
        let at = (s.head + s.len) % cap;
        if let Some(frame) = frame {
            s.slots[at].copy_from_slice(frame);
        }
        s.failed[at] = frame.is_none();
        s.index[at] = index;
        s.len += 1;
        s.down = false;
        cv.notify_all();
        true
    }

    /// Producer: the source is down and being retried (`true`), or back (`false`).
    pub fn set_down(&self, down: bool) {
        let mut s = self.lock();
        if down && !s.down {
            s.restarts += 1;
        }
        s.down = down;
        self.inner.1.notify_all();
    }

    /// Either side: no more frames (end of the source, or the consumer closing it).
    pub fn close(&self) {
        self.lock().ended = true;
        self.inner.1.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().ended
    }

    /// Consumer: copy the oldest frame into `buf`, waiting up to `wait` for one.
    pub fn take(&self, buf: &mut [u8], wait: Duration) -> Take {
        let (_, cv) = &*self.inner;
        let mut s = self.lock();
        if s.len == 0 && !s.ended {
            s = cv
                .wait_timeout_while(s, wait, |s| s.len == 0 && !s.ended)
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        if s.len == 0 {
            return if s.ended { Take::Ended } else { Take::Nothing { down: s.down } };
        }
        let (at, cap) = (s.head, s.slots.len());
        let (index, failed) = (s.index[at], s.failed[at]);
        if !failed {
            buf.copy_from_slice(&s.slots[at]);
        }
        s.head = (s.head + 1) % cap;
        s.len -= 1;
        cv.notify_all();
        if failed { Take::Failed(index) } else { Take::Frame(index) }
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.lock();
        PoolStats { dropped: s.dropped, restarts: s.restarts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_pool_delivers_every_frame_in_order() {
        let pool = FramePool::new(2, 2, false);
        let p = pool.clone();
        let t = std::thread::spawn(move || {
            for i in 0..50u32 {
                assert!(p.push(i, &[i as u8, 7]));
            }
            p.close();
        });
        let mut buf = [0u8; 2];
        let mut got = Vec::new();
        loop {
            match pool.take(&mut buf, Duration::from_secs(30)) {
                Take::Frame(i) => {
                    assert_eq!(buf, [i as u8, 7]);
                    got.push(i);
                }
                Take::Failed(i) => panic!("frame {i}: no frame was pushed as failed"),
                Take::Ended => break,
                Take::Nothing { .. } => panic!("a file pool timed out"),
            }
        }
        t.join().unwrap();
        assert_eq!(got, (0..50).collect::<Vec<_>>());
        assert_eq!(pool.stats().dropped, 0);
    }

    #[test]
    fn live_pool_drops_the_oldest_and_counts() {
        let pool = FramePool::new(1, 3, true);
        for i in 0..10u32 {
            assert!(pool.push(i, &[i as u8]));
        }
        let mut buf = [0u8; 1];
        assert_eq!(pool.take(&mut buf, Duration::ZERO), Take::Frame(7));
        assert_eq!(pool.stats().dropped, 7);
        pool.set_down(true);
        assert_eq!(pool.take(&mut buf, Duration::ZERO), Take::Frame(8));
        assert_eq!(pool.take(&mut buf, Duration::ZERO), Take::Frame(9));
        assert_eq!(pool.take(&mut buf, Duration::ZERO), Take::Nothing { down: true });
        assert_eq!(pool.stats().restarts, 1);
        pool.close();
        assert_eq!(pool.take(&mut buf, Duration::ZERO), Take::Ended);
        assert!(!pool.push(10, &[0]));
    }
}
