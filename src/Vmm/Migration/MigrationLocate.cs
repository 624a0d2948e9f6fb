using System.Net.Sockets;
using Vmm.Diagnostics;
using Vmm.Serialization;

namespace Vmm.Migration;

/// <summary>The question a source in doubt asks its target (<see cref="MigrationFrameType.Locate"/>): what became of
/// migration <see cref="Id"/> of VM <see cref="Name"/>? Asked on a connection of its own, set up as a migration's (TLS
/// too), and answered from the target's <see cref="MigrationOutcomes"/>.</summary>
public sealed record MigrationLocate(UInt128 Id, string Name)
{
    public const int MaxBytes = 16 + 4 + Vm.VmName.MaxLength;

    public byte[] ToBytes()
    {
        var w = new StateWriter();
        w.WriteUInt64((ulong)Id);
        w.WriteUInt64((ulong)(Id >> 64));
        w.WriteString(Name);
        return w.ToArray();
    }

    public static MigrationLocate Read(ReadOnlyMemory<byte> payload)
    {
        var r = new StateReader(payload);
        var id = r.ReadUInt64("migration id") | (UInt128)r.ReadUInt64("migration id") << 64;
        string name = r.ReadString("VM name", Vm.VmName.MaxLength);
        r.ExpectEnd("Locate frame");
        return new MigrationLocate(id, name);
    }

    /// <summary>Asks the target at <paramref name="target"/>; a target that cannot be reached or will not say is
    /// <see cref="MigrationOutcome.Unknown"/>, with the reason in <paramref name="why"/>.</summary>
    public MigrationOutcome Ask(string target, string? tlsDirectory, TimeSpan timeout, Logger log, out string why)
    {
        why = "";
        try
        {
            if (!MigrationSource.TryParseEndpoint(target, out string host, out int port)) throw new MigrationException($"'{target}' is not HOST:PORT");
            using var tls = tlsDirectory is null ? null : MigrationTls.Load(tlsDirectory);
            using var connection = new OutgoingConnections(host, port, target, timeout, tls);
            var channel = connection.OpenMain(log);
            channel.Send(MigrationFrameType.Locate, ToBytes());
            channel.Flush();
            var answer = OutgoingConnections.ExpectFrame(channel, MigrationFrameType.Located, "the target would not say");
            if (answer.Length != 1 || answer[0] > (byte)MigrationOutcome.Discarded) throw new MigrationException("the target's answer is not an outcome");
            var outcome = (MigrationOutcome)answer[0];
            why = outcome switch
            {
                MigrationOutcome.Committed => $"{target} took the migration's commit: the VM runs there",
                MigrationOutcome.Discarded => $"{target} discarded the migration before its commit: the VM never ran there",
                MigrationOutcome.Undecided => $"{target} is still taking the migration in; ask again",
                _ => $"{target} has no record of the migration (it may have restarted since)",
            };
            return outcome;
        }
        catch (Exception e) when (e is VmmException or IOException or SocketException or ObjectDisposedException)
        {
            why = $"{target} could not be asked: {e.Message}";
            return MigrationOutcome.Unknown;
        }
    }
}
