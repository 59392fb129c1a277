#!/usr/bin/env python3
"""Turns the RESULT/RSS lines of bench/boot.sh's log into a table of medians (ms); with
--disk, the RESULT lines of bench/disk.sh's log into a host / berth / QEMU table."""
import re
import statistics
import sys


def disk(path):
    res = {}
    for line in open(path, errors="replace"):
        if line.startswith(("FIOFAIL ", "NOGUEST ")) or line.startswith("BENCH-QEMU-OPTS -"):
            print(f"# {line.strip()}")
        m = re.match(r"RESULT (\w+) (\w+) bw_kib=(\d+) iops=(\d+)", line)
        if m:
            where = "berth" if m[1] == "guest" else m[1]  # logs before the QEMU column
            res.setdefault((where, m[2]), []).append((int(m[3]), int(m[4])))
    print("fio --direct=1, libaio: host = loop device in the emulated host; berth, qemu = the same")
    print("guest on virtio-blk-pci (/dev/vda) under berth and under QEMU -M microvm,pcie=on;")
    print("berththread = berth --disable-sandbox; bertholdmain = the berth of $BENCH_BERTH_OLD")
    print("(medians over the rounds; n = rounds that gave a figure)")
    order = ("host", "berth", "berththread", "bertholdmain", "qemu")
    cols = [c for c in order if any(k[0] == c for k in res)]
    ratios = [(a, b) for a, b in (("berth", "host"), ("berth", "qemu"), ("berth", "bertholdmain"),
                                  ("berththread", "bertholdmain"), ("berth", "berththread"))
              if a in cols and b in cols]
    print(f"{'job':38}" + "".join(f"{c:>13}" for c in cols) + "".join(f"{a[:6] + '/' + b[:6]:>15}" for a, b in ratios))
    for job, what in (
        ("seqwrite", "sequential write 1 MiB, QD16 (MiB/s)"),
        ("seqread", "sequential read 1 MiB, QD16 (MiB/s)"),
        ("randread", "random read 4 KiB, QD32 (IOPS)"),
    ):
        vals, ns = {}, {}
        for where in cols:
            rs = res.get((where, job), [])
            xs = [r[0] / 1024 if job != "randread" else r[1] for r in rs]
            vals[where] = statistics.median(xs) if xs else None
            ns[where] = len(xs)
        cells = "".join(f"{v:9.1f} n={ns[c]:<2}" if v is not None else f"{'-':>13}" for c, v in vals.items())

        def ratio(a, b):
            ok = vals[a] is not None and vals[b]
            return f"{vals[a] / vals[b]:15.2f}" if ok else f"{'-':>15}"

        print(f"{what:38}{cells}" + "".join(ratio(a, b) for a, b in ratios))


if len(sys.argv) > 2 and sys.argv[1] == "--disk":
    disk(sys.argv[2])
    sys.exit(0)


def fields(line):
    return dict(re.findall(r"(\w+)=([\w.]+)", line)) | {
        k: v for k, v in re.findall(r"(first_vCPU_entry|guestboottime|exiting)_?(\d+)", line)
    }


def med(xs):
    return statistics.median(xs) if xs else float("nan")


runs = {"berth": [], "qemu": [], "scale": [], "thp": [], "4k": [], "devproc": [], "devthread": [], "irqkernel": [], "irqsplit": []}
rss = {}
pss = {}
for line in open(sys.argv[1], errors="replace"):
    if line.startswith("RESULT "):
        tag = line.split()[1]
        f = fields(line)
        if f.get("rc") != "0":
            print(f"# failed run ignored: {line.strip()}")
            continue
        f["mark"] = re.search(r"MARK ([\d.]+)", line)
        runs[tag].append(f)
    elif line.startswith("NOINIT "):
        print(f"# {line.strip()}")
    elif line.startswith("RSS "):
        parts = line.split()
        rss[parts[1]] = fields(line)
    elif line.startswith("PSS "):
        parts = line.split()
        pss[parts[1]] = fields(line)


def wall(rs, end="end"):
    return [(float(r[end]) - float(r["launch"])) * 1000 for r in rs]


def mark(rs):
    return [(float(r["mark"].group(1)) - float(r["launch"])) * 1000 for r in rs if r["mark"]]


def us(rs, key):
    return [int(r[key]) / 1000 for r in rs if key in r]


b, q = runs["berth"], runs["qemu"]
print(f"berth vs QEMU -M microvm, 1 vCPU, 256 MiB, median of {len(b)} / {len(q)} boots (ms)")
rows = [
    ("(a) berth start -> first vCPU entry", med(us(b, "first_vCPU_entry")), None),
    ("(b) berth start -> guest init (boot timer)", med(us(b, "guestboottime")), None),
    ("    berth start -> exit after reboot -f", med(us(b, "exiting")), None),
    ("    launch -> init marker on console", med(mark(b)), med(mark(q))),
    ("    launch -> exit (wall, 10 ms steps)", med(wall(b)), med(wall(q))),
]
print(f"{'':45} {'berth':>9} {'qemu':>9} {'ratio':>6}")
for name, bv, qv in rows:
    ratio = f"{bv / qv:6.2f}" if qv else ""
    qs = f"{qv:9.0f}" if qv is not None else f"{'':9}"
    print(f"{name:45} {bv:9.1f} {qs} {ratio}")
for who in ("berth", "qemu"):
    if who in rss:
        kib = int(rss[who]["outside_guest_kib"])
        print(f"(c) {who} resident memory outside guest RAM: {kib / 1024:.1f} MiB")
print("berth start -> guest init (boot timer) by vCPU count (ms):")
for c in ("1", "4", "16"):
    xs = us([r for r in runs["scale"] if r.get("cpus") == c], "guestboottime")
    print(f"  {c:>2} vCPUs: median {med(xs):8.1f} over {len(xs)} boots")
if runs["thp"] or runs["4k"]:
    t, k = runs["thp"], runs["4k"]
    print(f"guest RAM pages, berth --hugepages thp vs off, median of {len(t)} / {len(k)} boots (ms)")
    print(f"{'':45} {'thp':>9} {'4 KiB':>9} {'4k/thp':>7}")
    for name, tv, kv in (
        ("berth start -> first vCPU entry", med(us(t, "first_vCPU_entry")), med(us(k, "first_vCPU_entry"))),
        ("berth start -> guest init (boot timer)", med(us(t, "guestboottime")), med(us(k, "guestboottime"))),
        ("launch -> init marker on console", med(mark(t)), med(mark(k))),
        ("launch -> exit (wall, 10 ms steps)", med(wall(t)), med(wall(k))),
    ):
        print(f"{name:45} {tv:9.1f} {kv:9.1f} {kv / tv:7.2f}")
if runs["devproc"] or runs["devthread"]:
    p, t = runs["devproc"], runs["devthread"]
    print(f"disk + rng + virtio console, backends in processes vs threads, median of {len(p)} / {len(t)} boots (ms)")
    print(f"{'':45} {'process':>9} {'thread':>9} {'p/t':>7}")
    for name, pv, tv in (
        ("berth start -> first vCPU entry", med(us(p, "first_vCPU_entry")), med(us(t, "first_vCPU_entry"))),
        ("berth start -> guest init (boot timer)", med(us(p, "guestboottime")), med(us(t, "guestboottime"))),
        ("launch -> init marker on console", med(mark(p)), med(mark(t))),
        ("launch -> exit (wall, 10 ms steps)", med(wall(p)), med(wall(t))),
    ):
        print(f"{name:45} {pv:9.1f} {tv:9.1f} {pv / tv:7.2f}")
for who in ("devproc", "devthread"):
    if who in pss:
        f = pss[who]
        print(f"PSS of berth and its children ({f['processes']} processes, {who[3:]}) outside guest RAM: "
              f"{int(f['outside_guest_kib']) / 1024:.1f} MiB (guest RAM {int(f['guest_kib']) / 1024:.0f} MiB)")
if runs["irqkernel"] or runs["irqsplit"]:
    k, s = runs["irqkernel"], runs["irqsplit"]
    print(f"interrupt controller, berth --irqchip kernel vs split, median of {len(k)} / {len(s)} boots (ms)")
    print(f"{'':45} {'kernel':>9} {'split':>9} {'s/k':>7}")
    for name, kv, sv in (
        ("berth start -> first vCPU entry", med(us(k, "first_vCPU_entry")), med(us(s, "first_vCPU_entry"))),
        ("berth start -> guest init (boot timer)", med(us(k, "guestboottime")), med(us(s, "guestboottime"))),
        ("launch -> init marker on console", med(mark(k)), med(mark(s))),
        ("launch -> exit (wall, 10 ms steps)", med(wall(k)), med(wall(s))),
    ):
        print(f"{name:45} {kv:9.1f} {sv:9.1f} {sv / kv:7.2f}")
