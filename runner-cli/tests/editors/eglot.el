;;; Emacs with eglot (emacs --batch -Q -l eglot.el), driven by
;;; runner-cli/tests/editors.rs: eglot manages FILE in MODE with the server SERVER (a
;;; JSON array), asks for its symbols, again after IDLE seconds of quiet, and shuts it
;;; down as eglot does: `shutdown', `exit', and at once `delete-process' (SIGKILL).
;;; Each step is a line in OUT.
(require 'eglot)
(let* ((out (getenv "OUT"))
       (file (getenv "FILE"))
       (dir (file-name-directory file))
       (contact (append (json-parse-string (getenv "SERVER") :array-type 'list) nil))
       (mode (intern (getenv "MODE")))
       (say (lambda (text) (write-region (concat text "\n") nil out t 'silent))))
  (add-hook 'project-find-functions (lambda (_) (cons 'transient dir)))
  (find-file file)
  (funcall mode)
  (let* ((server (eglot--connect (list mode) (project-current) 'eglot-lsp-server
                                 contact (getenv "LANGUAGE")))
         ;; A server that has not taken in the file yet may refuse the request
         ;; (clangd: "trying to get AST for non-added document"): no symbols yet.
         (symbols (lambda ()
                    (condition-case nil
                        (let ((names (mapcar (lambda (s) (plist-get s :name))
                                             (jsonrpc-request
                                              server :textDocument/documentSymbol
                                              (list :textDocument
                                                    (eglot--TextDocumentIdentifier))))))
                          (mapconcat #'identity (sort names #'string<) ","))
                      (jsonrpc-error ""))))
         (first ""))
    (funcall say (format "pid %d" (process-id (jsonrpc--process server))))
    ;; A server may answer before it has read the file: asked again until it has.
    (dotimes (_ 300)
      (when (string= first "")
        (setq first (funcall symbols))
        (when (string= first "") (sleep-for 0.1))))
    (funcall say (concat "symbols " first))
    (sleep-for (string-to-number (getenv "IDLE")))
    (funcall say (format "after the idle, running %s" (if (jsonrpc-running-p server) "t" "nil")))
    (funcall say (concat "symbols " (funcall symbols)))
    (eglot-shutdown server)
    (funcall say "shut down")))
(kill-emacs 0)
