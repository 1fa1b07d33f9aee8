//! Developer tasks for hotclone: the test lab (`lab`), the whole test
//! suite (`suite`), the demo (`demo`), the rescue image (`rescue`), shell
//! helpers (`sh`) and Debian package helpers (`apt`).
pub mod apt;
pub mod bench;
pub mod demo;
pub mod lab;
pub mod rescue;
pub mod sh;
pub mod suite;
