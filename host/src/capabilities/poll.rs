//! `wasi:io/poll` as wasmtime-wasi has it, except that a guest blocked in
//! `poll` or `pollable.block` gives its turn at the CPU to the next
//! instance in line until what it waits for is ready
//! ([`crate::resilience::turns`]).
//!
//! A `wasi:http` request (to another component or an allowed host) runs
//! beside the guest, which may go on computing; the turn can only be given
//! up where the guest stops, and this is where a guest stops to wait. It
//! lets a component with `max_parallel = 1` call itself, and keeps a
//! component waiting on slow hosts from holding the CPU slots of its
//! other instances. A pollable that is ready at once costs no turn.

use wasmtime::component::{Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::io::poll::{Host as _, HostPollable as _};

use crate::capabilities::services::Caller;

/// The interface whose two blocking functions are replaced. The linker
/// matches any `wasi:io@0.2.x` import to it.
const POLL_INTERFACE: &str = "wasi:io/poll@0.2.12";

/// What the blocking functions need from the store's data.
pub struct PollView<'a> {
    /// Where the pollables are.
    pub table: &'a mut ResourceTable,
    /// Whose turn to give up.
    pub caller: &'a Caller,
}

/// Replace `poll` and `pollable.block` in `linker`, which has wasmtime-wasi's
/// already; `get` finds the table and the invocation in the store's data.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> PollView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut poll = linker.instance(POLL_INTERFACE)?;
    poll.func_wrap_async("poll", move |mut store, (pollables,): (Vec<Resource<DynPollable>>,)| {
        Box::new(async move {
            let view = get(store.data_mut());
            let caller = view.caller.clone();
            let ready = caller.while_blocked(view.table.poll(pollables)).await??;
            Ok((ready,))
        })
    })?;
    poll.func_wrap_async(
        "[method]pollable.block",
        move |mut store, (pollable,): (Resource<DynPollable>,)| {
            Box::new(async move {
                let view = get(store.data_mut());
                let caller = view.caller.clone();
                caller.while_blocked(view.table.block(pollable)).await??;
                Ok(())
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}
