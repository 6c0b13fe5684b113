//! What `nixos-pxe sign` needs to know of systemd-stub's PE image to add the sections of a
//! unified kernel image (`.osrel`, `.cmdline`, `.linux`, `.initrd`) with `objcopy`: where its
//! own sections end in memory and the alignment new ones must keep (systemd 252 has no ukify;
//! the addresses are what ukify computes: each section after the previous, at the image's
//! SectionAlignment). Read from the PE headers (Microsoft's PE format: the COFF header after
//! `PE\0\0` at e_lfanew, the PE32+ optional header, then the section table).

/// The layout facts of a PE32+ image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub image_base: u64,
    pub section_alignment: u64,
    /// The first address (relative to the image base) after every section's memory.
    pub end: u64,
    /// The sections' names, in order.
    pub sections: Vec<String>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the layout of a PE32+ (x86-64 EFI) image; `Err` says what it is not.
pub fn layout(bytes: &[u8]) -> Result<Layout, String> {
    if bytes.get(..2) != Some(b"MZ") {
        return Err("not a PE image (no MZ header)".into());
    }
    let pe = u32_at(bytes, 0x3c).ok_or("cut short before e_lfanew")? as usize;
    if bytes.get(pe..pe + 4) != Some(b"PE\0\0") {
        return Err("not a PE image (no PE signature where e_lfanew points)".into());
    }
    let coff = pe + 4;
    let sections = u16_at(bytes, coff + 2).ok_or("cut short in the COFF header")? as usize;
    let optional_size = u16_at(bytes, coff + 16).ok_or("cut short in the COFF header")? as usize;
    let optional = coff + 20;
    if u16_at(bytes, optional) != Some(0x20b) {
        return Err("not a PE32+ image (an x86-64 EFI stub is PE32+)".into());
    }
    let image_base = u64_at(bytes, optional + 24).ok_or("cut short in the optional header")?;
    let section_alignment = u64::from(u32_at(bytes, optional + 32).ok_or("cut short in the optional header")?);
    if section_alignment == 0 || !section_alignment.is_power_of_two() {
        return Err(format!("a SectionAlignment of {section_alignment}"));
    }
    let table = optional + optional_size;
    let mut end = 0;
    let mut names = Vec::new();
    for i in 0..sections {
        let s = table + i * 40;
        let raw = bytes.get(s..s + 8).ok_or("cut short in the section table")?;
        names.push(String::from_utf8_lossy(raw).trim_end_matches('\0').to_string());
        let virtual_size = u64::from(u32_at(bytes, s + 8).ok_or("cut short in the section table")?);
        let address = u64::from(u32_at(bytes, s + 12).ok_or("cut short in the section table")?);
        end = end.max(address + virtual_size);
    }
    Ok(Layout { image_base, section_alignment, end, sections: names })
}

/// `value` rounded up to a multiple of `alignment` (a power of two).
pub fn align(value: u64, alignment: u64) -> u64 {
    value.div_ceil(alignment) * alignment
}

/// Where each of `sizes` goes, one after another from the end of `layout`'s sections, each at
/// the section alignment: the virtual addresses (image base included) objcopy's
/// `--change-section-vma` takes.
pub fn placements(layout: &Layout, sizes: &[u64]) -> Vec<u64> {
    let mut next = align(layout.end, layout.section_alignment);
    sizes
        .iter()
        .map(|size| {
            let at = next;
            next = align(at + size.max(&1), layout.section_alignment);
            layout.image_base + at
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal PE32+ header with two sections, as the tests' stand-in for the stub.
    fn image(base: u64, alignment: u32, sections: &[(&str, u32, u32)]) -> Vec<u8> {
        let mut b = vec![0u8; 0x400];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        b[0x86..0x88].copy_from_slice(&(sections.len() as u16).to_le_bytes());
        b[0x94..0x96].copy_from_slice(&240u16.to_le_bytes());
        let opt = 0x98;
        b[opt..opt + 2].copy_from_slice(&0x20bu16.to_le_bytes());
        b[opt + 24..opt + 32].copy_from_slice(&base.to_le_bytes());
        b[opt + 32..opt + 36].copy_from_slice(&alignment.to_le_bytes());
        for (i, (name, address, size)) in sections.iter().enumerate() {
            let s = opt + 240 + i * 40;
            b[s..s + name.len()].copy_from_slice(name.as_bytes());
            b[s + 8..s + 12].copy_from_slice(&size.to_le_bytes());
            b[s + 12..s + 16].copy_from_slice(&address.to_le_bytes());
        }
        b
    }

    #[test]
    fn sections_go_after_the_stubs_own_at_its_alignment() {
        let l = layout(&image(0, 0x200, &[(".text", 0x4000, 0xbff0), (".sdmagic", 0x19100, 0x34)])).expect("layout");
        assert_eq!(l, Layout { image_base: 0, section_alignment: 0x200, end: 0x19134, sections: vec![".text".into(), ".sdmagic".into()] });
        // The measured recipe (shared notes): .osrel at 0x19200, .cmdline at 0x19400, .linux at 0x19600.
        assert_eq!(placements(&l, &[12, 40, 0x10_0001]), vec![0x19200, 0x19400, 0x19600]);
        let based = layout(&image(0x1_0000_0000, 0x1000, &[(".text", 0x1000, 0x10)])).expect("layout");
        assert_eq!(placements(&based, &[0, 5]), vec![0x1_0000_2000, 0x1_0000_3000]);
    }

    #[test]
    fn what_is_not_a_pe32_plus_image_is_said() {
        assert!(layout(b"\x7fELF").unwrap_err().contains("no MZ"));
        let mut b = image(0, 0x200, &[]);
        b[0x98] = 0x0b;
        b[0x99] = 0x01;
        assert!(layout(&b).unwrap_err().contains("PE32+"));
        assert!(layout(&b[..0x90]).is_err());
        // The real stub, where installed (Debian's systemd-boot-efi).
        if let Ok(stub) = std::fs::read("/usr/lib/systemd/boot/efi/linuxx64.efi.stub") {
            let l = layout(&stub).expect("the stub");
            assert!(l.sections.iter().any(|s| s == ".sdmagic"), "{l:?}");
            assert!(l.end > 0x4000 && l.section_alignment >= 0x200, "{l:?}");
        }
    }
}
