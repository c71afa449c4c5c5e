//! A service whose `declare` never returns: it computes until the platform
//! gives up on it. Deploying it must hold up no deploy of another name.
//!
//! Written against the WIT directly, not the SDK, whose `declare` only
//! returns constants.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "event-service",
    generate_all,
});

use exports::pitstop::platform::events::{Event, Guest as EventsGuest, Topics};
use exports::pitstop::platform::handler::Guest as HandlerGuest;
use pitstop::platform::types::{Request, Response};

struct SlowDeclare;

impl HandlerGuest for SlowDeclare {
    fn handle(_request: Request) -> Response {
        Response { status: 200, headers: Vec::new(), body: b"slow".to_vec() }
    }
}

impl EventsGuest for SlowDeclare {
    fn declare() -> Topics {
        let mut spins = 0u64;
        loop {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }

    fn handle_event(_event: Event) -> Result<(), String> {
        Ok(())
    }
}

export!(SlowDeclare);
