//! How a pipe end travels to another process: its portable form (region,
//! end, adoption token).

use crate::queue::Item;
use crate::region::handle::{RegionHandle, cause, note_outgoing, note_transit};

use super::Connection;

impl<T: Item> rkyv::Archive for Connection<T> {
    type Archived = ArchivedPipeHandle;
    type Resolver = PipeHandleResolver;

    fn resolve(&self, resolver: Self::Resolver, out: rkyv::Place<Self::Archived>) {
        self.portable().resolve(resolver, out)
    }
}

impl<T: Item, S: rkyv::rancor::Fallible + ?Sized> rkyv::Serialize<S> for Connection<T>
where
    PipeHandle: rkyv::Serialize<S>,
    S::Error: rkyv::rancor::Source,
{
    fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
        note_outgoing(&RegionHandle::of(self.segment())).map_err(crate::region::handle::cause)?;
        if let Some(abandon) = self.start_transit() {
            note_transit(abandon);
        }
        self.portable().serialize(s)
    }
}

impl<T: Item, D: rkyv::rancor::Fallible + ?Sized> rkyv::Deserialize<Connection<T>, D>
    for ArchivedPipeHandle
where
    D::Error: rkyv::rancor::Source,
{
    fn deserialize(&self, _: &mut D) -> std::result::Result<Connection<T>, D::Error> {
        Connection::adopt(self).map_err(cause)
    }
}

/// The portable form of a pipe end (what a `Connection` encodes to; an
/// implementation detail of its `rkyv::Archive` impl, hidden from the docs).
#[doc(hidden)]
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
#[rkyv(attr(doc(hidden)))]
pub struct PipeHandle {
    /// The pipe region.
    pub region: RegionHandle,
    /// Which end.
    pub end: u32,
    /// The adoption token.
    pub token: u64,
}
