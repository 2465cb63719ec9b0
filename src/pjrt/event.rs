//! PJRT events: every asynchronous transfer or execution is awaited, never assumed done.

use super::error::Result;
use super::ffi;
use super::plugin::{pjrt_call, Args, Plugin};

/// Blocks until `event` completes, then destroys it. Returns the event's own error, if any.
pub(crate) fn await_and_destroy(
    plugin: &Plugin,
    event: *mut ffi::PJRT_Event,
    what: &'static str,
) -> Result<()> {
    if event.is_null() {
        return Ok(());
    }
    let mut args = ffi::PJRT_Event_Await_Args::new();
    args.event = event;
    let waited = pjrt_call!(plugin, PJRT_Event_Await, &mut args);
    let mut destroy = ffi::PJRT_Event_Destroy_Args::new();
    destroy.event = event;
    let destroyed = pjrt_call!(plugin, PJRT_Event_Destroy, &mut destroy);
    waited.map_err(|e| match e {
        super::PjrtError::Plugin { code, message, .. } => super::PjrtError::Plugin {
            function: what,
            code,
            message,
        },
        other => other,
    })?;
    destroyed
}
