//! Developer tasks for hotclone: the test lab (`lab`), shell helpers (`sh`)
//! and Debian package helpers (`apt`).
pub mod apt;
pub mod lab;
pub mod sh;
