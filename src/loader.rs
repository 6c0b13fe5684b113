//! Builds the GRUB EFI boot loader image with grub-mkimage.
//! (Being written: see issue 2.)

use crate::config::Resolved;
use crate::error::Error;
use camino::{Utf8Path, Utf8PathBuf};

pub struct GrubTools {
    pub lib: Utf8PathBuf,
    pub mkimage: String,
}

pub struct Built {
    pub image: Utf8PathBuf,
    pub image_size: u64,
    pub grub_cfg: Utf8PathBuf,
}

pub fn build(_resolved: &Resolved, _tools: &GrubTools, _out: &Utf8Path) -> Result<Built, Error> {
    Err(Error::Message("mk-bootloader is not built yet".into()))
}
