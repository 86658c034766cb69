/*
 * The socket calls of the relay's hot path, made without glibc's cancellation-point wrappers.
 *
 * In a process with more than one thread, glibc's read(), send() and sendmsg() switch the calling
 * thread to asynchronous cancellation before the system call and back after it (about 60
 * instructions per call; a relayed message costs two calls). pgrelay never cancels a thread, so
 * the hot path enters the kernel through syscall() instead: same arguments, same result, same
 * errno. Sanitizer builds keep the libc functions, whose interceptors check the buffers.
 */
#ifndef PGRELAY_NET_SOCKCALL_H
#define PGRELAY_NET_SOCKCALL_H

#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
	__has_feature(memory_sanitizer)
#define SOCKCALL_LIBC 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SOCKCALL_LIBC 1
#endif

static inline ssize_t sock_read(int fd, void *buf, size_t len)
{
#ifdef SOCKCALL_LIBC
	return read(fd, buf, len);
#else
	return syscall(SYS_read, fd, buf, len);
#endif
}

static inline ssize_t sock_send(int fd, const void *buf, size_t len, int flags)
{
#ifdef SOCKCALL_LIBC
	return send(fd, buf, len, flags);
#else
	return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
#endif
}

static inline ssize_t sock_sendmsg(int fd, const struct msghdr *msg, int flags)
{
#ifdef SOCKCALL_LIBC
	return sendmsg(fd, msg, flags);
#else
	return syscall(SYS_sendmsg, fd, msg, flags);
#endif
}

#endif
