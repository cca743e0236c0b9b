//! OpenAI's wire shapes (requests and responses), typed.

mod request;
mod response;

pub use request::*;
pub use response::*;
