//! Rendering of the Phoenix door's frames.
