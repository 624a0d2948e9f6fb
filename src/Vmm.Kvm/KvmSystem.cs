using Vmm.Kvm.Interop;

namespace Vmm.Kvm;

/// <summary>The open <c>/dev/kvm</c>: system-wide queries and VM creation.</summary>
public sealed unsafe class KvmSystem : IDisposable
{
    public const string DevicePath = "/dev/kvm";
    private const int ExpectedApiVersion = 12;

    private readonly FileDescriptorHandle _fd;

    private KvmSystem(FileDescriptorHandle fd) => _fd = fd;

    /// <summary>Opens /dev/kvm, turning the usual failures into messages that say what to do.</summary>
    public static KvmSystem Open(string path = DevicePath)
    {
        int fd = Libc.Open(path, Libc.O_RDWR | Libc.O_CLOEXEC);
        if (fd < 0)
        {
            int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
            string advice = errno switch
            {
                Libc.ENOENT => $"{path} does not exist: load the kvm module (modprobe kvm_intel or kvm_amd) and check that virtualization is enabled in the firmware",
                Libc.EACCES or Libc.EPERM => $"no permission to open {path}: run as root or add your user to the 'kvm' group (sudo usermod -aG kvm $USER, then log in again)",
                _ => $"cannot open {path}",
            };
            throw new PosixException("open", errno, advice);
        }
        var system = new KvmSystem(new FileDescriptorHandle(fd));
        int version = system.IoctlValue("KVM_GET_API_VERSION", KvmIoctls.GetApiVersion, 0);
        if (version != ExpectedApiVersion)
        {
            system.Dispose();
            throw new PosixException("KVM_GET_API_VERSION", 0, $"KVM API version {version}, vmm needs {ExpectedApiVersion}");
        }
        return system;
    }

    public int CheckExtension(KvmCapability capability) =>
        Libc.Ioctl(_fd.Number, KvmIoctls.CheckExtension, (nuint)capability) is var r && r < 0 ? 0 : r;

    public int VcpuMmapSize => IoctlValue("KVM_GET_VCPU_MMAP_SIZE", KvmIoctls.GetVcpuMmapSize, 0);

    public KvmVm CreateVm()
    {
        int fd = IoctlValue("KVM_CREATE_VM", KvmIoctls.CreateVm, 0);
        return new KvmVm(this, new FileDescriptorHandle(fd));
    }

    /// <summary>KVM_GET_SUPPORTED_CPUID: the leaves this host's KVM can present to a guest.</summary>
    public KvmCpuidEntry2[] GetSupportedCpuid()
    {
        for (int capacity = 128; ; capacity *= 2)
        {
            int size = sizeof(KvmCpuid2Header) + capacity * sizeof(KvmCpuidEntry2);
            byte[] buffer = new byte[size];
            fixed (byte* p = buffer)
            {
                ((KvmCpuid2Header*)p)->Count = (uint)capacity;
                if (Libc.Ioctl(_fd.Number, KvmIoctls.GetSupportedCpuid, p) < 0)
                {
                    int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                    if (errno == 7 /* E2BIG */ && capacity < 4096) continue;
                    throw new KvmException("KVM_GET_SUPPORTED_CPUID", errno);
                }
                int count = (int)((KvmCpuid2Header*)p)->Count;
                return new ReadOnlySpan<KvmCpuidEntry2>(p + sizeof(KvmCpuid2Header), count).ToArray();
            }
        }
    }

    /// <summary>KVM_GET_MSR_INDEX_LIST: the MSRs KVM can save and restore.</summary>
    public uint[] GetMsrIndexList()
    {
        for (int capacity = 256; ; capacity *= 2)
        {
            uint[] buffer = new uint[capacity + 1];
            buffer[0] = (uint)capacity;
            fixed (uint* p = buffer)
            {
                if (Libc.Ioctl(_fd.Number, KvmIoctls.GetMsrIndexList, p) < 0)
                {
                    int errno = System.Runtime.InteropServices.Marshal.GetLastPInvokeError();
                    if (errno == 7 /* E2BIG */ && capacity < 65536) continue;
                    throw new KvmException("KVM_GET_MSR_INDEX_LIST", errno);
                }
            }
            return buffer.AsSpan(1, (int)buffer[0]).ToArray();
        }
    }

    private int IoctlValue(string name, nuint request, nuint argument)
    {
        int result = Libc.Ioctl(_fd.Number, request, argument);
        if (result < 0) throw KvmException.FromLastError(name);
        return result;
    }

    public void Dispose() => _fd.Dispose();
}
