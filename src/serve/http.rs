//! The HTTP surface: `/metrics`, `/health`, JSON 404/405, the live page,
//! and the standalone server, one idea per file:
//!
//! - [`routes`](Routes): the routes, to mount on any actix `App` or `Scope`;
//! - `handlers`, `respond`, `page`: what each route answers;
//! - `middleware`: the one layer every answer passes through;
//! - `sizing`, `listen`, `server`: connection caps, binding, the server and its stop.

mod handlers;
mod listen;
mod middleware;
mod page;
mod respond;
mod routes;
mod server;
mod sizing;

pub use listen::{Listener, listen};
pub use routes::Routes;
pub use server::{check_web_config, serve_on, server};

#[cfg(any(test, feature = "test-util"))]
pub use page::{PAGE, page_html};
#[cfg(any(test, feature = "test-util"))]
pub use sizing::{WRITE_TIMEOUT, connections_per_worker, streams_within};
