//! Random case generators (filled below).
