//! Seed inputs: what Linux and a well-behaved backend do, written down field by field, so
//! the fuzzers start from traffic that gets past the first checks. The corpus test checks
//! each is in `fuzz/corpus/<target>/seed-<name>` (BERTH_FUZZ_WRITE_SEEDS=1 writes them).

use std::io::Write;

#[cfg(target_arch = "x86_64")]
use crate::emulator;
use crate::util::Writer;
use crate::{legacy, pci, queue, virtio_pci};

/// (target, seed name, bytes).
pub fn all() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut v = Vec::new();
    let mut add =
        |t: &'static str, name: &str, bytes: Vec<u8>| v.push((t, name.to_string(), bytes));
    #[cfg(target_arch = "x86_64")]
    {
        add(
            "boot_x86_64",
            "bzimage",
            boot(1, 4, "console=ttyS0 panic=1", &bzimage()),
        );
        add(
            "boot_x86_64",
            "bzimage-no-initrd",
            boot(2, 0, "", &bzimage()),
        );
        add(
            "boot_x86_64",
            "elf-pvh",
            boot(1, 1, "root=/dev/vda", &elf_pvh()),
        );
        let long = emulator::PAGING | emulator::LONG | emulator::PAE;
        let regs = |rax: u64, rcx: u64, rsi: u64, rdi: u64| {
            let mut g = [0u64; 16];
            (g[0], g[1], g[3], g[6], g[7]) = (rax, rcx, 0x1122_3344, rsi, rdi);
            g
        };
        let dev = 0x4000_0000u64;
        add(
            "emulator",
            "mov-store",
            emulator::seed(long, regs(dev + 0x10, 0, 0, 0), &[0x89, 0x18]),
        );
        add(
            "emulator",
            "rep-movsb",
            emulator::seed(long, regs(0, 5, 0x9000, dev), &[0xf3, 0xa4]),
        );
        add(
            "emulator",
            "or-byte",
            emulator::seed(long, regs(0, 0, 0, dev), &[0x80, 0x4f, 0x08, 0x80]),
        );
        let mut outs = regs(0, 4, 0x9000, 0);
        outs[2] = 0x3f8; // RDX: the port
        add(
            "emulator",
            "rep-outsb",
            emulator::seed(long, outs, &[0xf3, 0x6e]),
        );
        let mut moffs = vec![0x48, 0xa1];
        moffs.extend_from_slice(&(dev + 0x20).to_le_bytes());
        add(
            "emulator",
            "mov-moffs",
            emulator::seed(long, regs(0, 0, 0, 0), &moffs),
        );
        add(
            "emulator",
            "protected-mode-store",
            emulator::seed(
                emulator::CS_DB,
                regs(0xfec0_0000, 0, 0, 0),
                &[0x66, 0x89, 0x18],
            ),
        );
        for (i, cfg) in [[0u8; 8], [1; 8], [0xff; 8], [0x40, 0, 0, 0x80, 7, 0, 0, 0]]
            .iter()
            .enumerate()
        {
            add("acpi", &format!("config-{i}"), cfg.to_vec());
        }
    }
    let image = arm64_image(0, 0x2_0000, 0x1000);
    add("image_arm64", "image", [&[0x10][..], &image].concat());
    add(
        "image_arm64",
        "image-gz",
        [&[0x10][..], &gzip(&image)].concat(),
    );
    add(
        "image_arm64",
        "image-legacy-header",
        [&[0x10][..], &arm64_image(0, 0, 0x100)].concat(),
    );
    add(
        "image_arm64",
        "gzip-bomb",
        [&[0x01][..], &gzip(&arm64_image(0, 0, 1 << 20))].concat(),
    );
    for (i, cfg) in [
        vec![0u8; 16],
        vec![5; 64],
        vec![0x80; 48],
        (0..=255).collect(),
    ]
    .into_iter()
    .enumerate()
    {
        add("fdt", &format!("config-{i}"), cfg);
    }
    add("legacy", "linux-boot", legacy_boot());
    add("legacy", "ioapic", ioapic());
    add("virtio_pci", "bring-up-reset", virtio_bring_up());
    add("pci", "enumerate", pci_enumerate());
    for (name, bytes) in blk_requests() {
        add("virtqueue_blk", &name, bytes);
    }
    add(
        "virtqueue_rng",
        "read-64",
        queue_seed(0, &[(0x200, 64, true)], &[], 0),
    );
    add(
        "virtqueue_rng",
        "read-indirect",
        indirect_seed(&[(0x200, 32, true), (0x220, 32, true)]),
    );
    add(
        "virtqueue_console",
        "transmit",
        queue_seed(2, &[(0x200, 5, false)], b"hello", 0),
    );
    add(
        "virtqueue_console",
        "receive",
        queue_seed(0, &[(0x200, 64, true)], &[], 1),
    );
    add("vhost_user_frontend", "plain", frontend_replies(false, 1));
    add(
        "vhost_user_frontend",
        "protocol-ack",
        frontend_replies(true, 1),
    );
    add(
        "vhost_user_frontend",
        "protocol-ack-2-queues",
        frontend_replies(true, 2),
    );
    v
}

#[cfg(target_arch = "x86_64")]
fn boot(mem: u8, initrd_128k: u8, cmdline: &str, kernel: &[u8]) -> Vec<u8> {
    let mut v = vec![mem, initrd_128k];
    v.extend_from_slice(&(cmdline.len() as u16).to_le_bytes());
    v.extend_from_slice(cmdline.as_bytes());
    v.extend_from_slice(kernel);
    v
}

fn put(v: &mut [u8], at: usize, bytes: &[u8]) {
    v[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A bzImage's real-mode header (boot protocol 2.15, 64-bit entry) and a small payload.
#[cfg(target_arch = "x86_64")]
fn bzimage() -> Vec<u8> {
    let setup_sects = 1u8;
    let payload = 0x400;
    let mut v = vec![0u8; (usize::from(setup_sects) + 1) * 512 + payload];
    v[0x1f1] = setup_sects;
    put(&mut v, 0x1f4, &((payload / 16) as u32).to_le_bytes()); // syssize
    put(&mut v, 0x1fe, &0xaa55u16.to_le_bytes());
    put(&mut v, 0x202, b"HdrS");
    put(&mut v, 0x206, &0x020fu16.to_le_bytes());
    v[0x211] = 0x01; // LOADED_HIGH
    put(&mut v, 0x214, &0x10_0000u32.to_le_bytes()); // code32_start
    put(&mut v, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
    put(&mut v, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
    v[0x234] = 1; // relocatable
    put(&mut v, 0x236, &3u16.to_le_bytes()); // xloadflags: 64-bit entry, above 4 GiB
    put(&mut v, 0x238, &0x7ffu32.to_le_bytes()); // cmdline_size
    put(&mut v, 0x258, &0x100_0000u64.to_le_bytes()); // pref_address
    put(&mut v, 0x260, &0x40_0000u32.to_le_bytes()); // init_size
    v
}

/// An ELF64 vmlinux with one loadable segment and a PVH entry note.
#[cfg(target_arch = "x86_64")]
fn elf_pvh() -> Vec<u8> {
    let mut v = vec![0u8; 0x300];
    put(&mut v, 0, b"\x7fELF\x02\x01\x01");
    put(&mut v, 0x10, &2u16.to_le_bytes()); // ET_EXEC
    put(&mut v, 0x12, &62u16.to_le_bytes()); // EM_X86_64
    put(&mut v, 0x14, &1u32.to_le_bytes());
    put(&mut v, 0x18, &0x100_0000u64.to_le_bytes()); // e_entry
    put(&mut v, 0x20, &64u64.to_le_bytes()); // e_phoff
    put(&mut v, 0x34, &64u16.to_le_bytes()); // e_ehsize
    put(&mut v, 0x36, &56u16.to_le_bytes()); // e_phentsize
    put(&mut v, 0x38, &2u16.to_le_bytes()); // e_phnum
    let ph = |v: &mut Vec<u8>, at: usize, p_type: u32, off: u64, addr: u64, size: u64| {
        put(v, at, &p_type.to_le_bytes());
        put(v, at + 8, &off.to_le_bytes());
        put(v, at + 0x10, &addr.to_le_bytes());
        put(v, at + 0x18, &addr.to_le_bytes());
        put(v, at + 0x20, &size.to_le_bytes());
        put(v, at + 0x28, &size.to_le_bytes());
    };
    ph(&mut v, 64, 1, 0x200, 0x100_0000, 0x100); // PT_LOAD
    ph(&mut v, 120, 4, 0x180, 0, 20); // PT_NOTE
    put(&mut v, 0x180, &4u32.to_le_bytes()); // namesz
    put(&mut v, 0x184, &4u32.to_le_bytes()); // descsz
    put(&mut v, 0x188, &18u32.to_le_bytes()); // XEN_ELFNOTE_PHYS32_ENTRY
    put(&mut v, 0x18c, b"Xen\0");
    put(&mut v, 0x190, &0x100_0000u32.to_le_bytes());
    v
}

/// An arm64 Image: header with the magic, then `body` bytes.
fn arm64_image(text_offset: u64, image_size: u64, body: usize) -> Vec<u8> {
    let mut v = vec![0u8; 64 + body];
    put(&mut v, 8, &text_offset.to_le_bytes());
    put(&mut v, 16, &image_size.to_le_bytes());
    put(&mut v, 56, b"ARM\x64");
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// Legacy device indexes in `legacy::BASES`.
const COM1: u8 = 0;
const I8042: u8 = 1;
const CMOS: u8 = 2;
const PM: u8 = 3;
const PVPANIC: u8 = 4;
const POST: u8 = 5;
const BOOT_TIMER: u8 = 7;
const PL031: u8 = 8;
const IOREGSEL: u8 = 9;
const IOWIN: u8 = 10;
const IOAPIC_EOI: u8 = 11;

/// What Linux does to the IOAPIC in split mode: the UART's pin edge-triggered, an INTx pin
/// level-triggered, their lines and EOIs, then masking.
fn ioapic() -> Vec<u8> {
    let mut w = Writer::default();
    let reg = |w: &mut Writer, index: u32, value: u32| {
        w.u8(legacy::WRITE)
            .u8(IOREGSEL)
            .u8(0)
            .data(&index.to_le_bytes());
        w.u8(legacy::WRITE)
            .u8(IOWIN)
            .u8(0)
            .data(&value.to_le_bytes());
    };
    // Version, then pin 4 to vector 0x30 on APIC 1 (edge), pin 11 to 0x31 (level, low).
    w.u8(legacy::WRITE)
        .u8(IOREGSEL)
        .u8(0)
        .data(&1u32.to_le_bytes());
    w.u8(legacy::READ).u8(IOWIN).u8(0).data(&[0; 4]);
    reg(&mut w, 0x10 + 2 * 4 + 1, 1 << 24);
    reg(&mut w, 0x10 + 2 * 4, 0x30);
    reg(&mut w, 0x10 + 2 * 11 + 1, 0);
    reg(&mut w, 0x10 + 2 * 11, 0xa031);
    for (pin, level) in [(4u8, 1u8), (4, 0), (11, 1)] {
        w.u8(legacy::LINE).u8(pin).u8(level);
    }
    w.u8(legacy::EOI).u8(0x31);
    w.u8(legacy::LINE).u8(11).u8(0);
    w.u8(legacy::WRITE)
        .u8(IOAPIC_EOI)
        .u8(0)
        .data(&0x31u32.to_le_bytes());
    // Masked again, as on shutdown.
    reg(&mut w, 0x10 + 2 * 4, 0x1_0030);
    w.0
}

/// What Linux does to the legacy devices on its way up and down.
fn legacy_boot() -> Vec<u8> {
    let mut w = Writer::default();
    let wr = |w: &mut Writer, dev: u8, off: u8, data: &[u8]| {
        w.u8(legacy::WRITE).u8(dev).u8(off).data(data);
    };
    let rd = |w: &mut Writer, dev: u8, off: u8, len: u8| {
        w.u8(legacy::READ)
            .u8(dev)
            .u8(off)
            .data(&vec![0; usize::from(len)]);
    };
    // 8250 probe and set-up: scratch register, divisor latch, FIFO, modem control, IER.
    wr(&mut w, COM1, 7, &[0x55]);
    rd(&mut w, COM1, 7, 1);
    wr(&mut w, COM1, 3, &[0x80]);
    wr(&mut w, COM1, 0, &[0x01]);
    wr(&mut w, COM1, 1, &[0x00]);
    wr(&mut w, COM1, 3, &[0x03]);
    wr(&mut w, COM1, 2, &[0xc7]);
    wr(&mut w, COM1, 4, &[0x0b]);
    wr(&mut w, COM1, 1, &[0x0f]);
    rd(&mut w, COM1, 2, 1);
    rd(&mut w, COM1, 5, 1);
    for b in b"Linux\n" {
        wr(&mut w, COM1, 0, &[*b]);
    }
    w.u8(legacy::INPUT).u8(3);
    w.0.extend_from_slice(b"ls\n");
    rd(&mut w, COM1, 5, 1);
    rd(&mut w, COM1, 0, 1);
    rd(&mut w, COM1, 0, 1);
    // An odd width, as a buggy guest may use.
    rd(&mut w, COM1, 0, 4);
    // POST codes; CMOS time and century; the i8042 status and self-test.
    wr(&mut w, POST, 0, &[0x00]);
    for reg in [0x0a, 0x0b, 0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32, 0x8d] {
        wr(&mut w, CMOS, 0, &[reg]);
        rd(&mut w, CMOS, 1, 1);
    }
    rd(&mut w, I8042, 4, 1);
    wr(&mut w, I8042, 4, &[0xaa]);
    rd(&mut w, I8042, 0, 1);
    wr(&mut w, I8042, 4, &[0x20]);
    rd(&mut w, I8042, 0, 1);
    // pvpanic's feature probe; the boot timer's "init ran" write; the PL031's clock and id.
    rd(&mut w, PVPANIC, 0, 1);
    wr(&mut w, BOOT_TIMER, 0, &[0x01]);
    for off in [0x00, 0x0c, 0x0e] {
        rd(&mut w, PL031, off, 4);
    }
    // Anywhere: an unclaimed port and an address near the top.
    w.u8(legacy::ANYWHERE_READ).u8(0).u64(0x1234).data(&[0; 2]);
    w.u8(legacy::ANYWHERE_WRITE)
        .u8(1)
        .u64(u64::MAX - 2)
        .data(&[0; 4]);
    // pvpanic crash, then the ACPI reset register and S5 power-off.
    wr(&mut w, PVPANIC, 0, &[0x01]);
    wr(&mut w, PM, 2, &[0x01]);
    wr(&mut w, PM, 0, &[0x00, (5 << 2) | (1 << 5)]);
    wr(&mut w, PM, 1, &[0x34]);
    w.0
}

/// The offsets of the virtio capabilities and MSI-X in a transport's configuration space.
struct Caps {
    msix: u16,
}

fn caps(shape: &[u8]) -> Caps {
    let mut f = crate::util::Fields(shape);
    let s = virtio_pci::Shape::read(&mut f).unwrap();
    let (mut d, seen) = virtio_pci::transport(s).unwrap();
    use devices::pci::PciDevice;
    let mut at = d.read_config(0x34 / 4) & 0xff;
    let mut msix = 0;
    while at != 0 {
        let head = d.read_config(at as usize / 4);
        if head & 0xff == 0x11 {
            msix = at as u16;
        }
        at = (head >> 8) & 0xff;
    }
    seen.clear();
    Caps { msix }
}

fn rng_shape() -> Vec<u8> {
    let mut w = Writer::default();
    virtio_pci::Shape::write(&mut w, 4, &[256], 1 << 32, 0);
    w.0
}

/// Linux's virtio_pci_modern bring-up of an rng device, a few notifications and interrupts,
/// a configuration change, then a reset and a failure.
fn virtio_bring_up() -> Vec<u8> {
    let shape = rng_shape();
    let caps = caps(&shape);
    let mut w = Writer(shape);
    let cfg_w = |w: &mut Writer, reg: u16, off: u8, data: &[u8]| {
        w.u8(virtio_pci::WRITE_CONFIG).u16(reg).u8(off).data(data);
    };
    let bar_w = |w: &mut Writer, off: u16, data: &[u8]| {
        w.u8(virtio_pci::WRITE_BAR).u16(off).data(data);
    };
    let bar_r = |w: &mut Writer, off: u16, len: usize| {
        w.u8(virtio_pci::READ_BAR).u16(off).data(&vec![0; len]);
    };
    for reg in [0, 1, 2, 3, 4, 5, 11, 13] {
        w.u8(virtio_pci::READ_CONFIG).u16(reg);
    }
    cfg_w(&mut w, 1, 0, &[0x06, 0x00]);
    cfg_w(&mut w, caps.msix / 4, 3, &[0x80]);
    for v in 0..2u16 {
        let e = 0x4000 + v * 16;
        bar_w(&mut w, e, &0xfee0_0000u32.to_le_bytes());
        bar_w(&mut w, e + 8, &(0x40 + u32::from(v)).to_le_bytes());
        bar_w(&mut w, e + 12, &0u32.to_le_bytes());
    }
    bar_w(&mut w, 0x14, &[0]);
    bar_w(&mut w, 0x14, &[1]);
    bar_w(&mut w, 0x14, &[3]);
    for sel in 0..2u32 {
        bar_w(&mut w, 0x00, &sel.to_le_bytes());
        bar_r(&mut w, 0x04, 4);
    }
    bar_w(&mut w, 0x08, &0u32.to_le_bytes());
    bar_w(&mut w, 0x0c, &0u32.to_le_bytes());
    bar_w(&mut w, 0x08, &1u32.to_le_bytes());
    bar_w(&mut w, 0x0c, &1u32.to_le_bytes());
    bar_w(&mut w, 0x14, &[0x0b]);
    bar_r(&mut w, 0x14, 1);
    bar_w(&mut w, 0x10, &0u16.to_le_bytes());
    bar_r(&mut w, 0x12, 2);
    bar_w(&mut w, 0x16, &0u16.to_le_bytes());
    bar_r(&mut w, 0x18, 2);
    bar_w(&mut w, 0x18, &16u16.to_le_bytes());
    bar_w(&mut w, 0x1a, &1u16.to_le_bytes());
    bar_w(&mut w, 0x20, &0x1000u64.to_le_bytes());
    bar_w(&mut w, 0x28, &0x2000u64.to_le_bytes());
    bar_w(&mut w, 0x30, &0x3000u64.to_le_bytes());
    bar_r(&mut w, 0x1e, 2);
    bar_w(&mut w, 0x1c, &1u16.to_le_bytes());
    bar_w(&mut w, 0x14, &[0x0f]);
    bar_w(&mut w, 0x3000, &0u16.to_le_bytes());
    w.u8(virtio_pci::EVENT).u8(virtio_pci::CALL).u8(0);
    bar_r(&mut w, 0x1000, 1);
    w.u8(virtio_pci::EVENT)
        .u8(virtio_pci::CONFIG)
        .u8(4)
        .u32(0x1234_5678);
    bar_r(&mut w, 0x15, 1);
    bar_r(&mut w, 0x2000, 4);
    // Masking the function, then the vector; the PBA.
    cfg_w(&mut w, caps.msix / 4, 3, &[0xc0]);
    w.u8(virtio_pci::EVENT).u8(virtio_pci::CALL).u8(0);
    bar_r(&mut w, 0x6000, 8);
    cfg_w(&mut w, caps.msix / 4, 3, &[0x80]);
    bar_w(&mut w, 0x4000 + 16 + 12, &1u32.to_le_bytes());
    // Reset, polled until the control side finishes; then a failure.
    bar_w(&mut w, 0x14, &[0]);
    bar_r(&mut w, 0x14, 1);
    w.u8(virtio_pci::EVENT).u8(virtio_pci::RESET_DONE);
    bar_r(&mut w, 0x14, 1);
    w.u8(virtio_pci::EVENT).u8(virtio_pci::FAIL);
    bar_r(&mut w, 0x14, 1);
    // The BAR moved by the guest.
    cfg_w(&mut w, 4, 0, &0xffff_fff0u32.to_le_bytes());
    w.u8(virtio_pci::READ_CONFIG).u16(4);
    cfg_w(&mut w, 4, 0, &0x0000_8000u32.to_le_bytes());
    w.0
}

/// Linux's enumeration through 0xcf8/0xcfc and ECAM: ids, BAR sizing, command, MSI-X, and
/// a few accesses through the BAR window.
fn pci_enumerate() -> Vec<u8> {
    let shape = rng_shape();
    let caps = caps(&shape);
    let mut w = Writer(shape);
    let addr = |dev: u32, reg: u32| 0x8000_0000u32 | dev << 11 | reg << 2;
    for dev in 0..3 {
        w.u8(pci::PORT_WRITE)
            .u8(0)
            .data(&addr(dev, 0).to_le_bytes());
        w.u8(pci::PORT_READ).u8(4).data(&[0; 4]);
    }
    // BAR 0 of slot 1 sized and placed, through the ports.
    w.u8(pci::PORT_WRITE).u8(0).data(&addr(1, 4).to_le_bytes());
    w.u8(pci::PORT_WRITE)
        .u8(4)
        .data(&0xffff_ffffu32.to_le_bytes());
    w.u8(pci::PORT_READ).u8(4).data(&[0; 4]);
    w.u8(pci::PORT_WRITE).u8(4).data(&0u32.to_le_bytes());
    w.u8(pci::PORT_WRITE).u8(0).data(&addr(1, 5).to_le_bytes());
    w.u8(pci::PORT_WRITE).u8(4).data(&1u32.to_le_bytes());
    // ECAM: command register, capability pointer, MSI-X enable, a byte and a word access.
    let ecam = |dev: u32, off: u32| dev << 15 | off;
    w.u8(pci::ECAM_WRITE).u32(ecam(1, 4)).data(&[0x06, 0x00]);
    w.u8(pci::ECAM_READ).u32(ecam(1, 0x34)).data(&[0]);
    w.u8(pci::ECAM_READ)
        .u32(ecam(1, u32::from(caps.msix)))
        .data(&[0; 4]);
    w.u8(pci::ECAM_WRITE)
        .u32(ecam(1, u32::from(caps.msix) + 3))
        .data(&[0x80]);
    w.u8(pci::ECAM_READ).u32(ecam(1, 2)).data(&[0; 2]);
    w.u8(pci::ECAM_READ).u32(ecam(1, 0x101)).data(&[0; 4]);
    w.u8(pci::ECAM_READ).u32(ecam(9, 0)).data(&[0; 4]);
    // Through the BAR window: status, MSI-X table, notify.
    let bar = (virtio_pci::BAR_ADDR - pci::WINDOW) as u32;
    w.u8(pci::BAR_WRITE).u32(bar + 0x14).data(&[3]);
    w.u8(pci::BAR_READ).u32(bar + 0x14).data(&[0]);
    w.u8(pci::BAR_WRITE)
        .u32(bar + 0x4000)
        .data(&0xfee0_0000u32.to_le_bytes());
    w.u8(pci::BAR_READ).u32(bar + 0x4000).data(&[0; 8]);
    w.u8(pci::BAR_WRITE).u32(bar + 0x3000).data(&[0; 2]);
    w.u8(pci::EVENT).u8(virtio_pci::CALL).u8(0);
    w.u8(pci::BAR_READ).u32(bar + 0x1000).data(&[0]);
    w.0
}

/// Where the queue seeds put things (all inside `queue::MEM_SIZE`).
const DESC: u16 = 0x0;
const AVAIL: u16 = 0x100;
const USED: u16 = 0x140;

/// A queue of 16 with one chain of `descs` (address, length, device-writable) at head 0,
/// `data` at 0x200; `flags` as in the header (bit 1: the second queue), `input` the console
/// option byte.
fn queue_seed(flags: u8, descs: &[(u64, u32, bool)], data: &[u8], input: u8) -> Vec<u8> {
    queue_chains(flags, &[descs], &[(0x200, data)], [0, input])
}

fn queue_chains(
    flags: u8,
    chains: &[&[(u64, u32, bool)]],
    data: &[(usize, &[u8])],
    options: [u8; 2],
) -> Vec<u8> {
    let mut mem = vec![0u8; 0x600];
    let mut n = 0u16;
    let mut heads = Vec::new();
    for chain in chains {
        heads.push(n);
        for (i, &(addr, len, writable)) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            let flags = u16::from(!last) | if writable { 2 } else { 0 };
            let at = usize::from(DESC) + 16 * usize::from(n);
            put(&mut mem, at, &addr.to_le_bytes());
            put(&mut mem, at + 8, &len.to_le_bytes());
            put(&mut mem, at + 12, &flags.to_le_bytes());
            put(
                &mut mem,
                at + 14,
                &(if last { 0 } else { n + 1 }).to_le_bytes(),
            );
            n += 1;
        }
    }
    put(
        &mut mem,
        usize::from(AVAIL) + 2,
        &(heads.len() as u16).to_le_bytes(),
    );
    for (i, h) in heads.iter().enumerate() {
        put(&mut mem, usize::from(AVAIL) + 4 + 2 * i, &h.to_le_bytes());
    }
    for &(at, bytes) in data {
        put(&mut mem, at, bytes);
    }
    let mut v = vec![4, flags];
    for off in [DESC, AVAIL, USED] {
        v.extend_from_slice(&off.to_le_bytes());
    }
    v.extend_from_slice(&options);
    v.extend_from_slice(&[0, 0]);
    assert_eq!(v.len(), queue::HEADER);
    v.extend_from_slice(&mem);
    v
}

/// One indirect descriptor at head 0 whose table (at 0x400) holds `descs`.
fn indirect_seed(descs: &[(u64, u32, bool)]) -> Vec<u8> {
    let mut table = Vec::new();
    for (i, &(addr, len, writable)) in descs.iter().enumerate() {
        let last = i + 1 == descs.len();
        table.extend_from_slice(&addr.to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes());
        table.extend_from_slice(&(u16::from(!last) | if writable { 2 } else { 0 }).to_le_bytes());
        table.extend_from_slice(&(if last { 0u16 } else { i as u16 + 1 }).to_le_bytes());
    }
    let mut v = queue_chains(
        0,
        &[&[(0x400, table.len() as u32, false)]],
        &[(0x400, &table)],
        [0, 0],
    );
    // Turn head 0 into an indirect descriptor.
    put(&mut v, queue::HEADER + 12, &4u16.to_le_bytes());
    v
}

/// virtio-blk requests as Linux sends them: header (type, sector), data, status byte.
fn blk_requests() -> Vec<(String, Vec<u8>)> {
    let hdr =
        |t: u32, sector: u64| [t.to_le_bytes().as_slice(), &[0; 4], &sector.to_le_bytes()].concat();
    let read = [(0x200, 16, false), (0x300, 512, true), (0x580, 1, true)];
    let write = [(0x200, 16, false), (0x300, 512, false), (0x580, 1, true)];
    let bare = [(0x200, 16, false), (0x580, 1, true)];
    let id = [(0x200, 16, false), (0x300, 20, true), (0x580, 1, true)];
    let segment = [(0x200, 16, false), (0x300, 16, false), (0x580, 1, true)];
    let seg = [
        2u64.to_le_bytes().as_slice(),
        &4u32.to_le_bytes(),
        &0u32.to_le_bytes(),
    ]
    .concat();
    let pattern: Vec<u8> = (0..=255).cycle().take(512).collect();
    let one = |chain: &[(u64, u32, bool)], h: Vec<u8>, data: &[u8]| {
        queue_chains(0, &[chain], &[(0x200, &h), (0x300, data)], [0, 0])
    };
    vec![
        ("read".into(), one(&read, hdr(0, 1), &[])),
        ("write".into(), one(&write, hdr(1, 2), &pattern)),
        ("flush".into(), one(&bare, hdr(4, 0), &[])),
        ("get-id".into(), one(&id, hdr(8, 0), &[])),
        ("discard".into(), one(&segment, hdr(11, 0), &seg)),
        ("write-zeroes".into(), one(&segment, hdr(13, 0), &seg)),
        (
            "read-event-idx".into(),
            queue_chains(1, &[&read], &[(0x200, &hdr(0, 63))], [0, 0]),
        ),
        (
            "read-only-write".into(),
            queue_chains(0, &[&write], &[(0x200, &hdr(1, 0))], [1, 2]),
        ),
        (
            "three".into(),
            queue_chains(4, &[&read, &bare, &write], &[(0x200, &hdr(0, 5))], [0, 0]),
        ),
    ]
}

/// What berth's own backends answer to the frontend's conversation (vhost-user replies:
/// request, flags = version 1 | reply, size, body), with or without protocol features.
fn frontend_replies(protocol: bool, queues: u8) -> Vec<u8> {
    let mut w = Writer::default();
    w.u8(queues - 1).u8(8);
    let reply = |w: &mut Writer, req: u32, body: &[u8]| {
        w.u32(req).u32(0x5).u32(body.len() as u32);
        w.0.extend_from_slice(body);
    };
    let ack = |w: &mut Writer, req: u32| {
        if protocol {
            reply(w, req, &0u64.to_le_bytes());
        }
    };
    const GET_FEATURES: u32 = 1;
    const SET_FEATURES: u32 = 2;
    const SET_MEM_TABLE: u32 = 5;
    const SET_VRING_NUM: u32 = 8;
    const SET_VRING_ADDR: u32 = 9;
    const SET_VRING_BASE: u32 = 10;
    const GET_VRING_BASE: u32 = 11;
    const SET_VRING_KICK: u32 = 12;
    const SET_VRING_CALL: u32 = 13;
    const GET_PROTOCOL_FEATURES: u32 = 15;
    const GET_QUEUE_NUM: u32 = 17;
    const SET_VRING_ENABLE: u32 = 18;
    const GET_CONFIG: u32 = 24;
    const RESET_DEVICE: u32 = 34;
    let features = 1u64 << 32 | u64::from(protocol) << 30;
    reply(&mut w, GET_FEATURES, &features.to_le_bytes());
    if protocol {
        // MQ, REPLY_ACK, CONFIG, RESET_DEVICE.
        let p: u64 = 1 | 1 << 3 | 1 << 9 | 1 << 13;
        reply(&mut w, GET_PROTOCOL_FEATURES, &p.to_le_bytes());
        reply(&mut w, GET_QUEUE_NUM, &u64::from(queues).to_le_bytes());
        let mut config = vec![0u8; 12];
        put(&mut config, 4, &8u32.to_le_bytes());
        config.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        reply(&mut w, GET_CONFIG, &config);
    }
    ack(&mut w, SET_MEM_TABLE);
    ack(&mut w, SET_FEATURES);
    for _ in 0..queues {
        for req in [
            SET_VRING_NUM,
            SET_VRING_ADDR,
            SET_VRING_BASE,
            SET_VRING_CALL,
            SET_VRING_KICK,
        ] {
            ack(&mut w, req);
        }
        if protocol {
            ack(&mut w, SET_VRING_ENABLE);
        }
    }
    for q in 0..u32::from(queues) {
        let body = [q.to_le_bytes(), 0u32.to_le_bytes()].concat();
        reply(&mut w, GET_VRING_BASE, &body);
    }
    ack(&mut w, RESET_DEVICE);
    w.0
}
