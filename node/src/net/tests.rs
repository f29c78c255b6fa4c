//! Tests of the net module.
