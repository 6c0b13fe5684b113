//! Disks and boot loaders for the QEMU clients: an EFI program that stands in for a disk's boot
//! loader (it says so on the serial console and powers off), and a disk image with a GPT and an
//! EFI system partition holding given files, made without the host kernel's vfat.

use super::GRUB_LIB;
use std::path::{Path, PathBuf};

/// An EFI program standing in for a disk's boot loader: a GRUB image whose embedded (rescue
/// parser) config prints `message` (no quotes in it) on the serial console and powers off.
pub fn stand_in_loader(dir: &Path, message: &str) -> PathBuf {
    assert!(!message.contains(['\'', '"']), "the rescue parser would take a quote as quoting");
    let early = dir.join(format!("{}.cfg", message.len()));
    std::fs::write(
        &early,
        format!("serial --unit=0 --speed=115200\nterminal_output serial\necho {message}\nhalt\n"),
    )
    .expect("write early config");
    let image = dir.join(format!("stand-in-{}.efi", message.len()));
    super::run(
        std::process::Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-d", GRUB_LIB, "-c"])
            .arg(&early)
            .arg("-o")
            .arg(&image)
            .args(["serial", "terminal", "echo", "halt"]),
    );
    image
}

/// A disk image with a GPT and one EFI system partition (FAT32, label ESP) holding `files`
/// (path on the ESP, contents). The file system is made in a file with mkfs.vfat and filled
/// with mtools (the host kernel need not have vfat), then put at the partition's place.
pub fn esp_disk(dir: &Path, files: &[(&str, Vec<u8>)]) -> PathBuf {
    use std::io::{Seek, SeekFrom, Write};
    let staging = dir.join("esp-files");
    for (path, contents) in files {
        let file = staging.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, contents).expect("write");
    }
    let esp = dir.join("esp.img");
    let script = r#"set -eu
        mkfs.vfat -F 32 -n ESP -C "$1" 63488 >/dev/null
        cd "$2"
        for f in *; do mcopy -s -i "$1" "$f" ::/; done"#;
    super::run(std::process::Command::new("sh").args(["-c", script, "esp"]).arg(&esp).arg(&staging));
    let disk = dir.join("disk.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(64 << 20)).expect("disk image");
    super::run(
        std::process::Command::new("sh")
            .args(["-c", "printf 'label: gpt\\nstart=2048, size=126976, type=U\\n' | sfdisk --no-reread --no-tell-kernel -q \"$1\"", "gpt"])
            .arg(&disk),
    );
    let mut file = std::fs::OpenOptions::new().write(true).open(&disk).expect("open disk");
    file.seek(SeekFrom::Start(1 << 20)).expect("seek");
    file.write_all(&std::fs::read(&esp).expect("read esp")).expect("write esp");
    disk
}
