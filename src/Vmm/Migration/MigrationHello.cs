using Vmm.Serialization;
using Vmm.State;

namespace Vmm.Migration;

/// <summary>The first frame of a migration: magic, protocol version, the VM's name, the machine to build, and
/// whether its disk images travel in the stream (and how large each is) or sit on storage both hosts share, how
/// many connections the migration uses (more than one: the others join with the token of the target's Ready, see
/// <see cref="MigrationJoin"/>), whether this is a migration or the start of replication to a standby, and the
/// migration's id (random, so a source in doubt can ask the target what became of this very migration:
/// <see cref="MigrationLocate"/>). Read from a hostile peer: every field is checked.</summary>
public sealed record MigrationHello(string Name, MachineDescription Description, IReadOnlyList<long>? CopiedDiskBytes, int Connections = 1, bool Replication = false)
{
    public UInt128 MigrationId { get; init; } = MigrationJoin.NewToken();

    private const byte FlagDisksCopied = 1, FlagSeveralConnections = 2, FlagReplication = 4;

    /// <summary>The most connections one migration may use: past a few per core, more only add threads.</summary>
    public const int MaxConnections = 16;

    /// <summary>16 TiB: a bound on what a stream may ask a target to create, far above a raw image vmm serves.</summary>
    public const long MaxDiskBytes = 1L << 44;

    public bool CopiesDisks => CopiedDiskBytes is not null;

    public byte[] ToBytes()
    {
        var w = new StateWriter();
        foreach (byte b in MigrationChannel.Magic) w.WriteUInt8(b);
        w.WriteUInt32(MigrationChannel.ProtocolVersion);
        w.WriteString(Name);
        Description.Write(w);
        // One connection sets no flag, so a target from before several connections still takes it.
        w.WriteUInt8((byte)((CopiesDisks ? FlagDisksCopied : 0) | (Connections > 1 ? FlagSeveralConnections : 0) | (Replication ? FlagReplication : 0)));
        foreach (long bytes in CopiedDiskBytes ?? []) w.WriteUInt64((ulong)bytes);
        if (Connections > 1) w.WriteUInt8((byte)Connections);
        w.WriteUInt64((ulong)MigrationId);
        w.WriteUInt64((ulong)(MigrationId >> 64));
        return w.ToArray();
    }

    public static MigrationHello Read(ReadOnlyMemory<byte> payload)
    {
        var r = new StateReader(payload);
        Span<byte> magic = stackalloc byte[MigrationChannel.Magic.Length];
        for (int i = 0; i < magic.Length; i++) magic[i] = r.ReadUInt8("magic");
        if (!magic.SequenceEqual(MigrationChannel.Magic)) throw new MigrationException("not a vmm migration stream (bad magic)");
        uint version = r.ReadUInt32("protocol version");
        // An older source takes a lost confirmation for a failed migration and resumes its VM, perhaps beside this one.
        if (version is 1 or 2)
            throw new MigrationException($"the source speaks migration protocol version {version}, without the commit step that keeps a VM from running in two places; upgrade vmm there (this one speaks version {MigrationChannel.ProtocolVersion})");
        if (version != MigrationChannel.ProtocolVersion)
            throw new MigrationException($"migration protocol version {version}; this vmm speaks version {MigrationChannel.ProtocolVersion}");
        string name = r.ReadString("VM name", Vm.VmName.MaxLength);
        if (!Vm.VmName.IsValid(name)) throw new MigrationException($"migration stream: '{name}' is not a VM name");
        var description = MachineDescription.Read(r);
        byte flags = r.ReadUInt8("Hello flags");
        if ((flags & ~(FlagDisksCopied | FlagSeveralConnections | FlagReplication)) != 0) throw new MigrationException($"migration stream: unknown Hello flags 0x{flags:x2}");
        long[]? sizes = null;
        if ((flags & FlagDisksCopied) != 0)
        {
            sizes = new long[description.Disks.Count];
            for (int i = 0; i < sizes.Length; i++)
            {
                ulong bytes = r.ReadUInt64("disk image size");
                if (bytes % Devices.Virtio.VirtioBlock.SectorBytes != 0 || bytes > MaxDiskBytes)
                    throw new MigrationException($"migration stream: disk image size {bytes} is not a multiple of {Devices.Virtio.VirtioBlock.SectorBytes} up to {MaxDiskBytes}");
                sizes[i] = (long)bytes;
            }
        }
        int connections = 1;
        if ((flags & FlagSeveralConnections) != 0)
        {
            connections = r.ReadUInt8("connection count");
            if (connections is < 2 or > MaxConnections) throw new MigrationException($"migration stream: {connections} connections (2 to {MaxConnections} when the flag is set)");
        }
        var id = r.ReadUInt64("migration id") | (UInt128)r.ReadUInt64("migration id") << 64;
        r.ExpectEnd("Hello frame");
        return new MigrationHello(name, description, sizes, connections, (flags & FlagReplication) != 0) { MigrationId = id };
    }
}
