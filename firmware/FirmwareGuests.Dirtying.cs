using Iced.Intel;
using static Iced.Intel.AssemblerRegisters;

namespace Vmm.Firmware;

/// <summary>A guest that dirties memory at a set rate and checks it, for live-migration tests and benchmarks.</summary>
public static partial class FirmwareGuests
{
    /// <summary>Where <see cref="DirtyMemoryWithChecksum"/>'s region begins: 16 MiB, above the code (1 MiB), the
    /// guest's own tables (2 MiB) and its counters (3 MiB).</summary>
    public const ulong DirtyingRegionAddress = 0x100_0000;

    /// <summary>The dirtying guest's running sum S of the first qword of every page of its region, as it believes
    /// it to be. (Its count of dirtying writes is at <see cref="CounterAddress"/>.)</summary>
    public const ulong DirtyingChecksumAddress = CounterAddress + 8;

    /// <summary>The number of ticks the dirtying guest has completed and checked.</summary>
    public const ulong DirtyingTickAddress = CounterAddress + 16;

    // CPL3 registers that live for the whole run; rax, rbx, rcx, rdx, rsi and rdi are scratch.
    private static readonly AssemblerRegister64 StateBase = rbp;      // CounterAddress
    private static readonly AssemblerRegister64 SlotCycles = r8;      // TSC cycles between two page writes
    private static readonly AssemblerRegister64 PageIndex = r9;       // the next page to dirty
    private static readonly AssemblerRegister64 Sum = r10;            // S
    private static readonly AssemblerRegister64 Writes = r11;         // dirtying writes done
    private static readonly AssemblerRegister64 TickStart = r12;      // TSC at the start of this tick
    private static readonly AssemblerRegister64 Deadline = r13;       // TSC to wait for
    private static readonly AssemblerRegister64 PagesLeft = r14;      // pages still to dirty in this tick
    private static readonly AssemblerRegister64 TickNumber = r15;     // ticks done

    /// <summary>Dirties memory at <see cref="DirtyingGuestOptions.DirtyMiBPerSecond"/> and checks it every tick,
    /// at CPL3, where the nested backend runs it natively. Prints "ready", then "tick 00000001", "tick 00000002",
    /// ...; after <see cref="DirtyingGuestOptions.Ticks"/> ticks checks the whole region and prints "done" with the
    /// number of writes (16 hex digits), then exits with <see cref="ExitValueSuccess"/>. A wrong sum prints
    /// "checksum mismatch at tick n", a wrong byte "memory mismatch", an exception "FAULT xx"; each exits with
    /// <see cref="ExitValueFailure"/>. Needs RAM up to <see cref="DirtyingRegionAddress"/> plus the region.</summary>
    public static byte[] DirtyMemoryWithChecksum(DirtyingGuestOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        var a = new Assembler(64);
        var userEntry = a.CreateLabel();
        var printHex = a.CreateLabel();
        var sumFirstQwords = a.CreateLabel();

        EmitEnterUserMode(a, userEntry, printHex);
        a.Label(ref userEntry);
        EmitDirtyingWorkload(a, options, printHex, sumFirstQwords);
        EmitPrintHexRoutine(a, printHex);
        EmitSumFirstQwordsRoutine(a, sumFirstQwords, options.PageCount);
        return Assemble(a);
    }

    private static void EmitDirtyingWorkload(Assembler a, DirtyingGuestOptions o, Label printHex, Label sumFirstQwords)
    {
        var finished = a.CreateLabel();
        EmitDirtyingStart(a, o, sumFirstQwords);
        EmitTickLoop(a, o, printHex, sumFirstQwords, finished);
        if (o.Ticks > 0) EmitFinalCheck(a, o, printHex, sumFirstQwords, finished);
    }

    /// <summary>Zeroes the counters, fills the region if asked, and takes S from what the region then holds, so a
    /// region that is not filled starts from whatever it contains.</summary>
    private static void EmitDirtyingStart(Assembler a, DirtyingGuestOptions o, Label sumFirstQwords)
    {
        a.mov(ebp, (uint)CounterAddress); // StateBase
        a.xor(Writes, Writes);
        a.xor(TickNumber, TickNumber);
        a.xor(PageIndex, PageIndex);
        a.mov(__qword_ptr[StateBase], Writes);
        a.mov(__qword_ptr[StateBase + 16], TickNumber);
        if (o.FillRandomFirst) EmitFillRandom(a, o);
        a.call(sumFirstQwords);
        a.mov(Sum, rax);
        a.mov(__qword_ptr[StateBase + 8], Sum);
        EmitPrint(a, "ready\n");
    }

    /// <summary>Each tick: dirty its pages, wait for its end, check S against the region, print the tick; after
    /// the last tick, go to <paramref name="finished"/>.</summary>
    private static void EmitTickLoop(Assembler a, DirtyingGuestOptions o, Label printHex, Label sumFirstQwords, Label finished)
    {
        var tickLoop = a.CreateLabel();
        var checksumMismatch = a.CreateLabel();
        if (o.PagesPerTick > 0) a.mov(SlotCycles, (long)(o.TickTscCycles / (ulong)o.PagesPerTick));
        EmitReadTsc(a);
        a.mov(TickStart, rax);
        a.Label(ref tickLoop);
        EmitDirtyOneTick(a, o);
        a.mov(rcx, (long)o.TickTscCycles);
        a.lea(Deadline, __[TickStart + rcx]);
        EmitWaitUntil(a, Deadline);
        a.inc(TickNumber);
        a.mov(__qword_ptr[StateBase + 16], TickNumber);
        a.call(sumFirstQwords);
        a.cmp(rax, Sum);
        a.jne(checksumMismatch);
        EmitPrint(a, "tick ");
        EmitPrintHex(a, TickNumber, 8, printHex);
        EmitPrint(a, "\n");
        if (o.Ticks > 0)
        {
            a.cmp(TickNumber, o.Ticks);
            a.je(finished);
        }
        EmitScheduleNextTick(a, o);
        a.jmp(tickLoop);

        a.Label(ref checksumMismatch);
        EmitPrint(a, "checksum mismatch at tick ");
        EmitPrintHex(a, TickNumber, 8, printHex);
        EmitPrint(a, "\n");
        EmitExitFromUserMode(a, ExitValueFailure);
    }

    /// <summary>After the last tick: every byte of the fill that the dirtying did not replace, and S once more.</summary>
    private static void EmitFinalCheck(Assembler a, DirtyingGuestOptions o, Label printHex, Label sumFirstQwords, Label finished)
    {
        var memoryMismatch = a.CreateLabel();
        a.Label(ref finished);
        if (o.FillRandomFirst) EmitVerifyRandomFill(a, o, memoryMismatch);
        a.call(sumFirstQwords);
        a.cmp(rax, Sum);
        a.jne(memoryMismatch);
        EmitPrint(a, "done ");
        EmitPrintHex(a, Writes, 16, printHex);
        EmitPrint(a, "\n");
        EmitExitFromUserMode(a, ExitValueSuccess);
        a.Label(ref memoryMismatch);
        EmitPrint(a, "memory mismatch\n");
        EmitExitFromUserMode(a, ExitValueFailure);
    }

    /// <summary>Writes the tick's pages, each in its own slot of the tick: after a write, waits for the next slot's
    /// start. Slots are counted from the tick's start, so a guest that falls behind runs flat out until it catches
    /// up and never waits more than the schedule asks.</summary>
    private static void EmitDirtyOneTick(Assembler a, DirtyingGuestOptions o)
    {
        if (o.PagesPerTick == 0) return;
        var nextPage = a.CreateLabel();
        a.mov(Deadline, TickStart);
        a.mov(PagesLeft, o.PagesPerTick);
        a.Label(ref nextPage);
        EmitDirtyOnePage(a, o);
        a.add(Deadline, SlotCycles);
        EmitWaitUntil(a, Deadline);
        a.dec(PagesLeft);
        a.jnz(nextPage);
    }

    /// <summary>Replaces the first qword of page PageIndex with <see cref="DirtyingGuestOptions.ValueOfWrite"/>,
    /// keeps S true (S += new - old), counts the write, and steps PageIndex by the stride, mod the page count.
    /// The page is written before the counter, so a host that pauses the guest and reads the counter c knows that
    /// write c - 1 is complete.</summary>
    private static void EmitDirtyOnePage(Assembler a, DirtyingGuestOptions o)
    {
        var inRange = a.CreateLabel();
        a.mov(rdi, PageIndex);
        a.shl(rdi, 12);
        a.add(rdi, (int)DirtyingRegionAddress);
        a.lea(rax, __[Writes + 1]);
        a.mov(rdx, DirtyingGuestOptions.ValueMultiplier);
        a.imul(rax, rdx);
        a.sub(Sum, __qword_ptr[rdi]);
        a.add(Sum, rax);
        a.mov(__qword_ptr[rdi], rax);
        a.mov(__qword_ptr[StateBase + 8], Sum);
        a.inc(Writes);
        a.mov(__qword_ptr[StateBase], Writes);
        a.add(PageIndex, o.PageStride);
        a.cmp(PageIndex, o.PageCount);
        a.jb(inRange);
        a.sub(PageIndex, o.PageCount);
        a.Label(ref inRange);
    }

    /// <summary>The next tick starts when this one was due to end, which keeps the average rate exact when a tick
    /// ran late for a moment. When the guest is more than a whole tick behind (it was paused, or the rate is
    /// beyond reach) it starts now instead: a burst to catch up would dirty faster than asked.</summary>
    private static void EmitScheduleNextTick(Assembler a, DirtyingGuestOptions o)
    {
        var onSchedule = a.CreateLabel();
        a.mov(rcx, (long)o.TickTscCycles);
        a.add(TickStart, rcx);
        EmitReadTsc(a);
        a.sub(rax, TickStart);
        a.cmp(rax, rcx);
        a.jbe(onSchedule);
        a.add(TickStart, rax);
        a.Label(ref onSchedule);
    }

    private static void EmitFillRandom(Assembler a, DirtyingGuestOptions o)
    {
        var nextQword = a.CreateLabel();
        a.mov(rax, o.Seed);
        a.mov(edi, (uint)DirtyingRegionAddress);
        a.mov(rcx, (long)o.PageCount * (DirtyingGuestOptions.PageBytes / 8));
        a.Label(ref nextQword);
        EmitXorshift64(a);
        a.mov(__qword_ptr[rdi], rax);
        a.add(rdi, 8);
        a.dec(rcx);
        a.jnz(nextQword);
    }

    /// <summary>Regenerates the fill and compares every qword but each page's first, which the dirtying replaced
    /// and the sum S accounts for.</summary>
    private static void EmitVerifyRandomFill(Assembler a, DirtyingGuestOptions o, Label mismatch)
    {
        var nextPage = a.CreateLabel();
        var nextQword = a.CreateLabel();
        a.mov(rax, o.Seed);
        a.mov(edi, (uint)DirtyingRegionAddress);
        a.mov(ebx, o.PageCount);
        a.Label(ref nextPage);
        EmitXorshift64(a);
        a.add(rdi, 8);
        a.mov(ecx, DirtyingGuestOptions.PageBytes / 8 - 1);
        a.Label(ref nextQword);
        EmitXorshift64(a);
        a.cmp(__qword_ptr[rdi], rax);
        a.jne(mismatch);
        a.add(rdi, 8);
        a.dec(ecx);
        a.jnz(nextQword);
        a.dec(ebx);
        a.jnz(nextPage);
    }

    /// <summary>Marsaglia's xorshift64 (13, 7, 17) on rax; clobbers rdx.</summary>
    private static void EmitXorshift64(Assembler a)
    {
        a.mov(rdx, rax);
        a.shl(rdx, 13);
        a.xor(rax, rdx);
        a.mov(rdx, rax);
        a.shr(rdx, 7);
        a.xor(rax, rdx);
        a.mov(rdx, rax);
        a.shl(rdx, 17);
        a.xor(rax, rdx);
    }

    /// <summary>rax = the sum of the first qword of every page of the region. Clobbers rcx and rsi.</summary>
    private static void EmitSumFirstQwordsRoutine(Assembler a, Label sumFirstQwords, int pageCount)
    {
        var nextPage = a.CreateLabel();
        a.Label(ref sumFirstQwords);
        a.mov(esi, (uint)DirtyingRegionAddress);
        a.mov(ecx, pageCount);
        a.xor(eax, eax);
        a.Label(ref nextPage);
        a.add(rax, __qword_ptr[rsi]);
        a.add(rsi, DirtyingGuestOptions.PageBytes);
        a.dec(ecx);
        a.jnz(nextPage);
        a.ret();
    }

    /// <summary>rax = the TSC. rdtsc runs at CPL3 because the boot state leaves CR4.TSD clear.</summary>
    private static void EmitReadTsc(Assembler a)
    {
        a.rdtsc();
        a.shl(rdx, 32);
        a.or(rax, rdx);
    }

    /// <summary>Spins with pause until the TSC reaches <paramref name="deadline"/>; returns at once if it has.</summary>
    private static void EmitWaitUntil(Assembler a, AssemblerRegister64 deadline)
    {
        var spin = a.CreateLabel();
        var reached = a.CreateLabel();
        a.Label(ref spin);
        EmitReadTsc(a);
        a.cmp(rax, deadline);
        a.jae(reached);
        a.pause();
        a.jmp(spin);
        a.Label(ref reached);
    }

    private static void EmitPrintHex(Assembler a, AssemblerRegister64 value, int digits, Label printHex)
    {
        a.mov(rax, value);
        a.mov(ecx, digits);
        a.call(printHex);
    }
}
