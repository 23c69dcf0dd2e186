//! The application shell around the pure core: the engine (load → decide →
//! effects → save), the step messages that carry work on the queue, the
//! configuration read from app settings, and the doctor that checks a spec
//! can run before it does.

pub mod config;
pub mod doctor;
pub mod engine;
pub mod messages;
pub mod replay;
