//! Parsing of the Phoenix door's frames.
