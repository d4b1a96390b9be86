//! Placeholder for the reference book.
