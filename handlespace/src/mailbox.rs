//! Bounded lock-free mailboxes (design §3): a worker that receives a write for a pool in a foreign
//! shard posts it to the owning worker's mailbox; the owner drains its mailbox in batches once per
//! loop turn and posts the completion back the same way. Never blocks; a full mailbox is the
//! sender's signal to shed load ("lack of resources") or to retry on its next turn.

use crossbeam_queue::ArrayQueue;

/// A bounded multi-producer mailbox of one shard's worker.
#[derive(Debug)]
pub struct Mailbox<T> {
    queue: ArrayQueue<T>,
}

impl<T> Mailbox<T> {
    /// A mailbox holding at most `capacity` messages (at least 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
        }
    }

    /// Posts a message; gives it back if the mailbox is full.
    pub fn post(&self, message: T) -> Result<(), T> {
        self.queue.push(message)
    }

    /// Takes up to `max` messages in arrival order and hands each to `handle`; returns how many.
    pub fn drain(&self, max: usize, mut handle: impl FnMut(T)) -> usize {
        let mut n = 0;
        while n < max {
            let Some(m) = self.queue.pop() else { break };
            handle(m);
            n += 1;
        }
        n
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The capacity.
    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn full_mailbox_returns_the_message_and_drain_is_bounded_and_ordered() {
        let m = Mailbox::new(3);
        for i in 0..3 {
            m.post(i).unwrap();
        }
        assert_eq!(m.post(9), Err(9));
        let mut got = Vec::new();
        assert_eq!(m.drain(2, |x| got.push(x)), 2);
        assert_eq!(got, [0, 1]);
        assert_eq!(m.len(), 1);
        assert_eq!(m.drain(10, |x| got.push(x)), 1);
        assert_eq!(got, [0, 1, 2]);
        assert!(m.is_empty());
    }

    #[test]
    fn many_producers_one_consumer_lose_nothing() {
        let m = Arc::new(Mailbox::new(64));
        let producers: Vec<_> = (0..4u64)
            .map(|p| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        let mut msg = p * 1_000_000 + i;
                        while let Err(back) = m.post(msg) {
                            msg = back;
                            std::thread::yield_now();
                        }
                    }
                })
            })
            .collect();
        let mut seen = vec![0u64; 4];
        let mut total = 0;
        while total < 40_000 {
            total += m.drain(16, |msg| {
                let (p, i) = ((msg / 1_000_000) as usize, msg % 1_000_000);
                // Per producer, messages arrive in the order they were posted.
                assert_eq!(i, seen[p]);
                seen[p] += 1;
            });
        }
        for p in producers {
            p.join().unwrap();
        }
        assert_eq!(seen, [10_000; 4]);
    }
}
