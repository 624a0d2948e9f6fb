namespace Vmm.Migration;

/// <summary>The frames of a migration stream (see <see cref="MigrationChannel"/>).</summary>
public enum MigrationFrameType : byte
{
    // Source to target.
    /// <summary>The <see cref="MigrationHello"/>: magic, version, the VM's name, the machine to build with the CPUID
    /// each vCPU showed its guest (a target whose KVM cannot offer it answers <see cref="Error"/>, before the source
    /// pauses), and whether its disks travel.</summary>
    Hello = 1,
    /// <summary>A batch of pages: count (4), then every page's guest address (8 each; low bit set: a zero page, no
    /// data), then the 4 KiB of each page with data, in the same order. Addresses first: the target knows where
    /// each page goes before its bytes arrive, and reads runs of adjacent pages straight into guest RAM.</summary>
    Pages = 2,
    /// <summary>The end of one copy pass (its number); the target answers <see cref="PassDone"/> once it has
    /// written every page of the pass. With several connections it ends the pass on each, and the source starts
    /// the next pass only once every connection said PassDone: a page sent again in a later pass, on another
    /// connection, can never be overtaken by its older copy. In replication: the first full copy is pass 1, and passes
    /// 2, 3, ... before the first epoch carry what the guest changed meanwhile (the standby applies each in place).</summary>
    PassEnd = 3,
    /// <summary>The paused VM's <see cref="State.MachineState"/>: after it, the target makes copied disk images
    /// durable, restores, and answers <see cref="Prepared"/>; it resumes only on <see cref="Commit"/>.</summary>
    State = 4,
    /// <summary>The source gave up (the reason as text); the target discards everything.</summary>
    Abort = 5,
    /// <summary>Disk image content (storage migration): disk index (4), image offset (8), then the bytes.</summary>
    DiskData = 6,
    /// <summary>A disk image range that reads as zeros (a hole is punched): disk index (4), offset (8), length (8).</summary>
    DiskZero = 7,
    /// <summary>The first frame of one more connection of a migration under way (see <see cref="MigrationJoin"/>):
    /// the token the target's <see cref="Ready"/> gave, and the connection's index. The target answers
    /// <see cref="Ready"/> and the connection carries Pages, disk frames and PassEnd from then on.</summary>
    Join = 8,
    /// <summary>The point of no return (no payload): the target resumes the VM. Until the source sends it, the VM is the
    /// source's, and any failure resumes it there; once it is sent, the source never resumes the VM by itself: without
    /// <see cref="Resumed"/> it stays paused, in doubt, until the target is asked (<see cref="Locate"/>) or an
    /// operator says the target does not run it. At no instant do two copies run guest code.</summary>
    Commit = 9,
    /// <summary>Either side, replication only: nothing else to say, and still here. Answered in kind.</summary>
    Heartbeat = 10,
    /// <summary>Replication: the end of an epoch (its number, 8 bytes): its pages, disk blocks and State came
    /// before. The standby applies the epoch and answers <see cref="EpochCommitted"/>.</summary>
    EpochEnd = 11,
    /// <summary>Replication, a planned handover: the VM stays paused on the primary, and the epoch just committed
    /// (its number, 8 bytes) is its last. The standby, holding that epoch whole, echoes the frame back as its answer;
    /// the primary, once it has the echo, sends the frame a last time (it stops its VM now) and closes. Only that last
    /// frame makes the replica a handed-over one, resumed when asked without fencing: a stream that ends after the
    /// echo without it leaves the standby not knowing whether the primary had the echo, so the replica is a lost
    /// primary's (fenced before any resume).</summary>
    Handover = 12,

    /// <summary>The first frame of a connection that only asks what became of one migration (its id, 16 bytes, then the
    /// VM's name): a source in doubt asks its target. Answered by <see cref="Located"/>.</summary>
    Locate = 13,

    // Target to source.
    /// <summary>The target built the machine (its KVM offers the guest's CPUID) and takes pages. When the Hello asked
    /// for several connections, it carries the 16-byte token each further connection joins with; it also answers a
    /// <see cref="Join"/> it took. A standby's carries its failover timeout in milliseconds (4 bytes).</summary>
    Ready = 16,
    /// <summary>The target took <see cref="Commit"/> and the VM runs there: the source stops.</summary>
    Resumed = 17,
    /// <summary>The target refused or failed (the reason as text).</summary>
    Error = 18,
    /// <summary>Every page up to that pass's end is in the target's RAM (the pass number). The source waits
    /// for it before the next decision, so the measured bandwidth is end to end, and no backlog of a pass
    /// still in socket buffers is left to drain while the VM is paused.</summary>
    PassDone = 19,
    /// <summary>Replication: the standby holds the epoch (its number) in full, applied: the primary may release
    /// that epoch's output.</summary>
    EpochCommitted = 20,
    /// <summary>The target holds the whole VM (disk images durable, state restored) and resumes it on <see cref="Commit"/>;
    /// without Commit it discards it. A source that does not get it may still resume its VM.</summary>
    Prepared = 21,
    /// <summary>The answer to <see cref="Locate"/>: one <see cref="MigrationOutcome"/> byte.</summary>
    Located = 22,
}
