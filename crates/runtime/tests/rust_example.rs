//! Builds and runs the Rust percpu_addv example (crates/runtime/examples/
//! percpu_addv.rs) in `auto` and `always` mode; the total must be exactly
//! threads × adds.

mod common;

#[test]
fn rust_percpu_addv_example_is_exact() {
    let (root, target) = common::root_and_target();
    common::cargo_build(&root, &["--example", "percpu_addv"]);
    common::check_percpu_addv(&target.join("debug/examples/percpu_addv"));
}
