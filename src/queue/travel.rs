//! How a queue endpoint travels to another process: its region's handle and
//! the participant entry that moves with it.

use super::endpoints::{
    ArchivedEndpointHandle, EndpointHandle, EndpointHandleResolver, Receiver, Sender,
};
use super::{Item, Queue};
use crate::error::Result;
use crate::region::handle::{RegionHandle, cause, note_outgoing, note_transit};
use rkyv::rancor::{Fallible, Source};
use rkyv::{Archive, Deserialize, Place, Serialize};

/// Archive, Serialize and Deserialize for a queue endpoint.
macro_rules! endpoint_archive {
    ($ty:ident, $role:expr) => {
        impl<T: Item> Archive for $ty<T> {
            type Archived = ArchivedEndpointHandle;
            type Resolver = EndpointHandleResolver;

            fn resolve(&self, resolver: Self::Resolver, out: Place<Self::Archived>) {
                self.portable().resolve(resolver, out)
            }
        }

        impl<T: Item, S: Fallible + ?Sized> Serialize<S> for $ty<T>
        where
            EndpointHandle: Serialize<S>,
            S::Error: Source,
        {
            fn serialize(&self, s: &mut S) -> std::result::Result<Self::Resolver, S::Error> {
                let region = RegionHandle::of(self.segment());
                note_outgoing(&region).map_err(crate::region::handle::cause)?;
                if let Some(abandon) = self.start_transit() {
                    note_transit(abandon);
                }
                self.portable().serialize(s)
            }
        }

        impl<T: Item, D: Fallible + ?Sized> Deserialize<$ty<T>, D> for ArchivedEndpointHandle
        where
            D::Error: Source,
        {
            fn deserialize(&self, _: &mut D) -> std::result::Result<$ty<T>, D::Error> {
                let open = || -> Result<$ty<T>> {
                    let queue = Queue::<T>::from_handle(self.region.to_handle())?;
                    let entry =
                        queue
                            .raw
                            .adopt(self.entry.to_native(), self.token.to_native(), $role)?;
                    Ok($ty::new(queue, entry))
                };
                open().map_err(cause)
            }
        }
    };
}

endpoint_archive!(Sender, crate::queue::ROLE_SENDER);

endpoint_archive!(Receiver, crate::queue::ROLE_RECEIVER);
