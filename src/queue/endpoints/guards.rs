//! What a zero-copy operation lends: [`SendSlot`] (a reserved slot, written
//! in place, published by `commit`) and [`RecvGuard`] (a received slot, read
//! in place, freed on drop); and the receive iterators [`Iter`] and
//! [`TryIter`].

use super::{Receiver, Sender};
use crate::queue::ring::SKIP;
use crate::queue::{Item, Variable};
use bytemuck::Pod;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// A reserved slot, written in place. [`commit`](Self::commit) publishes
/// it; dropping it uncommitted publishes a skip (receivers never see it).
pub struct SendSlot<'a, T: Item, V: ?Sized> {
    pub(in crate::queue) sender: &'a mut Sender<T>,
    pub(in crate::queue) pos: u64,
    pub(in crate::queue) len: usize,
    pub(in crate::queue) committed: bool,
    pub(in crate::queue) _t: PhantomData<*mut V>,
}

impl<T: Item, V: ?Sized> SendSlot<'_, T, V> {
    /// Publishes the message.
    pub fn commit(mut self) {
        self.committed = true;
        self.sender.commit(self.pos, self.len);
    }
}

impl<T: Item, V: ?Sized> Drop for SendSlot<'_, T, V> {
    fn drop(&mut self) {
        if !self.committed {
            self.sender
                .queue
                .raw
                .commit(self.sender.entry, self.pos, SKIP);
        }
    }
}

impl<T: Pod> Deref for SendSlot<'_, T, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is ours until commit; 16-aligned, size_of::<T>()
        // bytes; any bytes are a valid T (Pod).
        unsafe { &*self.sender.queue.raw.data(self.pos).cast::<T>() }
    }
}

impl<T: Pod> DerefMut for SendSlot<'_, T, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in deref; exclusive while we hold the claim.
        unsafe { &mut *self.sender.queue.raw.data(self.pos).cast::<T>() }
    }
}

impl<T: Variable> Deref for SendSlot<'_, T, [u8]> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the slot is ours until commit; len <= max_len bytes.
        unsafe { std::slice::from_raw_parts(self.sender.queue.raw.data(self.pos), self.len) }
    }
}

impl<T: Variable> DerefMut for SendSlot<'_, T, [u8]> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref; exclusive while we hold the claim.
        unsafe { std::slice::from_raw_parts_mut(self.sender.queue.raw.data(self.pos), self.len) }
    }
}

impl<T: Item, V: ?Sized> std::fmt::Debug for SendSlot<'_, T, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSlot")
            .field("pos", &self.pos)
            .field("len", &self.len)
            .finish()
    }
}

/// A received message, borrowed in place; the slot is freed on drop.
pub struct RecvGuard<'a, T: Item, V: ?Sized> {
    pub(in crate::queue) receiver: &'a mut Receiver<T>,
    pub(in crate::queue) pos: u64,
    pub(in crate::queue) len: usize,
    pub(in crate::queue) _v: PhantomData<*const V>,
}

impl<T: Item, V: ?Sized> Drop for RecvGuard<'_, T, V> {
    fn drop(&mut self) {
        self.receiver.release(self.pos);
    }
}

impl<T: Pod> Deref for RecvGuard<'_, T, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is claimed by us until drop; it holds a committed
        // T, 16-aligned; Pod accepts any bytes. Peers are trusted not to
        // write into a claimed slot (as for every shared-memory borrow).
        unsafe { &*self.receiver.queue.raw.data(self.pos).cast::<T>() }
    }
}

impl<T: Variable> Deref for RecvGuard<'_, T, [u8]> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: claimed slot; len was checked <= max_len before the claim
        // was returned, so the slice stays inside the slot.
        unsafe { std::slice::from_raw_parts(self.receiver.queue.raw.data(self.pos), self.len) }
    }
}

impl<T: Item, V: ?Sized> std::fmt::Debug for RecvGuard<'_, T, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecvGuard")
            .field("pos", &self.pos)
            .field("len", &self.len)
            .finish()
    }
}

/// The blocking iterator of [`Receiver::iter`] (and of `for msg in &rx`).
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct Iter<'a, T: Item> {
    pub(in crate::queue) receiver: &'a Receiver<T>,
}

impl<T: Pod> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.receiver.recv().ok()
    }
}

/// The non-blocking iterator of [`Receiver::try_iter`].
#[derive(Debug)]
#[must_use = "iterators are lazy and do nothing unless consumed"]
pub struct TryIter<'a, T: Item> {
    pub(in crate::queue) receiver: &'a Receiver<T>,
}

impl<T: Pod> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.receiver.try_recv().ok()
    }
}

impl<'a, T: Pod> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}
