//! Examples live beside this file; this library is empty.
