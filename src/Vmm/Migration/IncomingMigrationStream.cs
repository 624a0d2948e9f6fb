using System.Net.Sockets;

namespace Vmm.Migration;

/// <summary>The target's view of a new connection: its first byte, peeked before anything is read, tells a
/// TLS ClientHello from a plain vmm Hello frame, so a source and target that disagree about TLS are told so
/// in words each understands (a plain Error frame, which a TLS source also recognises) instead of failing
/// on each other's bytes.</summary>
public static class IncomingMigrationStream
{
    /// <summary>The stream to receive a migration from: plain, or with <paramref name="tls"/> the TLS session
    /// after the source's certificate was accepted. Throws a <see cref="MigrationException"/> (the source told
    /// why where it can be) when the source speaks the other way, or TLS refuses it. Blocks until the source
    /// sends its first byte: the caller bounds that with its deadline (closing the socket ends the wait).</summary>
    public static Stream Open(Socket connection, MigrationTls? tls)
    {
        var plain = new NetworkStream(connection, ownsSocket: false);
        int first = PeekFirstByte(connection);
        if (tls is null)
        {
            if (first == MigrationTls.HandshakeRecordType) Refuse(plain, "a TLS connection reached this plain migrate-receive (start it with --tls-dir to take TLS)");
            return plain;
        }
        if (first == (byte)MigrationFrameType.Hello) Refuse(plain, "a plain migration stream reached this migrate-receive, which takes TLS only (migrate with --tls-dir)");
        return tls.AuthenticateSource(plain);
    }

    /// <summary>The first byte the source sent, left unread; -1 when it closed without sending any.</summary>
    private static int PeekFirstByte(Socket connection)
    {
        byte[] first = new byte[1];
        try
        {
            return connection.Receive(first, SocketFlags.Peek) == 1 ? first[0] : -1;
        }
        catch (Exception e) when (e is SocketException or ObjectDisposedException)
        {
            throw new MigrationException($"the connection failed before the source sent anything: {e.Message}", e);
        }
    }

    /// <summary>Tells the source <paramref name="why"/> in a plain Error frame, then fails this connection with it.</summary>
    private static void Refuse(Stream plain, string why)
    {
        try
        {
            var channel = new MigrationChannel(plain);
            channel.SendText(MigrationFrameType.Error, why);
            channel.Flush();
        }
        catch (MigrationException)
        {
            // The source is gone; it learns nothing more.
        }
        throw new MigrationException(why);
    }
}
