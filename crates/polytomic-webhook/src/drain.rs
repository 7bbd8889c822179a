//! Draining the unread body of a refused request: the core crate's [`Drain`], which the
//! stage layers use too (see `polytomic_webhook_core::drain` for why and when).

pub(crate) use polytomic_webhook_core::drain::Drain;
